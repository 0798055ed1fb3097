"""The graph is built fast and the recorder's bookkeeping stays small, without
losing any recorded fact."""

import gc

import networkx as nx
import torch

import gradtrace
from gradtrace.record import compat


def _loop_trace(n=50):
    with gradtrace.trace() as tr:
        x = torch.ones(4, requires_grad=True)
        y = x
        for _ in range(n):
            y = y * 2 + x
        y.sum().backward()
        x.data.add_(1)
    return tr


def test_the_built_graph_equals_one_built_through_the_networkx_api():
    G = _loop_trace().graph
    H = nx.MultiDiGraph()
    H.graph.update(G.graph)
    H.add_nodes_from(G.nodes(data=True))
    H.add_edges_from(G.edges(keys=True, data=True))
    assert nx.utils.graphs_equal(G, H) and list(G.pred.items()) == list(H.pred.items())


def test_every_edge_is_the_same_object_seen_from_both_ends():
    G = _loop_trace().graph
    assert all(G._pred[v][u] is G._succ[u][v] for u, v in G.edges())


def test_two_edges_between_one_pair_get_keys_0_and_1():
    with gradtrace.trace() as tr:
        x = torch.ones(3)
        y = x * x
    G = tr.graph
    (op,) = [n for n, d in G.nodes(data=True) if d.get("name") == "Tensor.mul"]
    (u,) = {u for u, _ in G.in_edges(op)}
    assert sorted(G.succ[u][op]) == [0, 1]


def test_records_of_dead_storages_are_freed_at_once():
    with gradtrace.trace(values="none"):
        x = torch.ones(8)
        for _ in range(3000):
            x = x + 1
        gc.collect()
        alive = sum(type(o).__name__ == "_S" for o in gc.get_objects())
    assert alive < 50


def test_torch_is_building_is_true_only_inside_a_compile_context():
    from torch._guards import CompileContext, compile_context

    with compile_context(CompileContext(None)):
        inside = compat.torch_is_building()
    assert inside and not compat.torch_is_building()


_LOOP = '''
import time
import torch
import gradtrace
with gradtrace.trace(values="none") as tr:
    x = torch.ones(8)
    t0 = time.process_time()
    for i in range(N):
        y = x + 1
        x = y * 0.5
    spent = time.process_time() - t0
'''


def _script(tmp_path, name, functions):
    """Return ``run(n)``: run a script whose module code has ``functions`` functions
    before a loop of ``n`` iterations at module level; return (CPU seconds, trace)."""
    import runpy

    head = "".join(f"def f{i}(a, b=({i}, 'x{i}', 2.5)):\n    return a * {i} + b[0]\n" for i in range(functions))
    path = tmp_path / f"{name}.py"
    path.write_text(head + _LOOP)

    def run(n):
        g = runpy.run_path(str(path), init_globals={"N": n})
        return g["spent"], g["tr"]

    return run


def test_each_op_of_a_loop_in_a_long_script_has_its_own_line(tmp_path):
    run = _script(tmp_path, "long_lines", 300)
    _, tr = run(3)
    text = [t.strip() for t in (tmp_path / "long_lines.py").read_text().splitlines()]
    line = {code: text.index(code) + 1 for code in ("x = torch.ones(8)", "y = x + 1", "x = y * 0.5")}
    ops = sorted((d["seq"], d["line"]) for _, d in tr.graph.nodes(data=True) if d["kind"] == "op")
    expected = [line["x = torch.ones(8)"]] + [line["y = x + 1"], line["x = y * 0.5"]] * 3
    assert [ln for _, ln in ops] == expected


def test_recording_costs_no_more_per_op_in_a_long_script_than_in_a_short_one(tmp_path):
    short, long_ = _script(tmp_path, "short", 0), _script(tmp_path, "long", 300)
    best_short = min(short(3000)[0] for _ in range(3))
    best_long = min(long_(3000)[0] for _ in range(3))
    assert best_long < 2.5 * best_short
