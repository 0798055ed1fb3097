"""DOT drawings: views, module clusters and depth, escaping, highlights."""

import pydot
import pytest
import torch
from models import MLP

import gradtrace
from gradtrace.views.dot import have_graphviz, render, to_dot


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = MLP(4, 4, 4)

    def forward(self, x):
        return self.inner(x) + x


class Deep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.Sequential(Block(), Block())

    def forward(self, x):
        return self.blocks(x).sum()


@pytest.fixture(scope="module")
def deep_graph():
    model = Deep()
    with gradtrace.trace() as tr:
        model(torch.ones(2, 4)).backward()
    return tr.graph


def _parse(text):
    (g,) = pydot.graph_from_dot_data(text)
    return g


def _all_nodes(g):
    out = list(g.get_nodes())
    for sub in g.get_subgraphs():
        out += _all_nodes(sub)
    return out


def _cluster_labels(g):
    out = []
    for sub in g.get_subgraphs():
        out.append(sub.get_label())
        out += _cluster_labels(sub)
    return out


def test_each_module_with_submodules_gets_a_cluster_named_by_its_last_part_and_type(deep_graph):
    g = _parse(to_dot(deep_graph, depth=10))
    labels = [str(x).strip('"') for x in _cluster_labels(g)]
    assert {"0 · Block", "1 · Block", "inner · MLP"} <= set(labels)


def test_a_leaf_module_names_its_op_instead_of_getting_a_cluster(deep_graph):
    g = _parse(to_dot(deep_graph, depth=10))
    labels = [str(n.get_label()) for n in _all_nodes(g)]
    assert any(lb.strip('"').startswith("fc1: F.linear") for lb in labels)
    assert not any("fc1 · Linear" in str(x) for x in _cluster_labels(g))


def test_depth_collapses_deeper_modules_into_one_node_each(deep_graph):
    deep = _all_nodes(_parse(to_dot(deep_graph, depth=10)))
    shallow = _all_nodes(_parse(to_dot(deep_graph, depth=2)))
    assert len(shallow) < len(deep)
    boxes = [n.get_label() for n in shallow if n.get_shape() == "box3d"]
    # blocks is a Sequential (a container adds no level): its two Blocks are level 2
    assert sorted(str(b).strip('"').split("\\n")[:2] for b in boxes) == [["0", "Block"], ["1", "Block"]]


def test_writes_are_drawn_as_red_dashed_version_edges():
    with gradtrace.trace() as tr:
        x = torch.zeros(3)
        y = x[:2]
        y += 1
    edges = _parse(to_dot(tr.graph, view="forward", tensors=True)).get_edges()
    writes = [e for e in edges if str(e.get_label()).strip('"') == "write"]
    assert len(writes) == 2 and all(e.get_style() == "dashed" for e in writes)
    mem = _parse(to_dot(tr.graph, view="memory")).get_edges()
    assert [str(e.get_label()).strip('"') for e in mem].count("view") == 1


def test_labels_with_quotes_braces_angle_brackets_and_unicode_stay_valid_dot():
    ns = {}
    code = 'import torch\nwith gt.trace() as tr:\n    ñame_é = torch.ones(2)\n    b = ñame_é + 1\n'
    exec(compile(code, "we\"ird{<file>}.py", "exec"), {"gt": gradtrace, "__name__": "x"}, ns)
    G = ns["tr"].graph
    for n, d in G.nodes(data=True):
        if d["kind"] == "tensor" and d["tid"] == 1:
            d["label"] = 'a "quoted" {brace} <angle> \\ back'
    for view in ("forward", "autograd", "memory", "all"):
        g = _parse(to_dot(G, view=view))
        assert g is not None
    if have_graphviz():
        assert render(to_dot(G, view="all"), "svg").startswith(b"<?xml")


def test_highlighted_nodes_are_marked(deep_graph):
    # the model's first op (making its input is data loading, not drawn by default)
    op = next(n for n, d in deep_graph.nodes(data=True) if d["kind"] == "op" and d.get("module"))
    text = to_dot(deep_graph, depth=10, highlight={op})
    assert 'color="#cc0000"' in text and "penwidth=3" in text


def test_autograd_view_names_the_implicit_weighting_of_the_backward_call(deep_graph):
    assert "w = 1 (implicit)" in to_dot(deep_graph, view="autograd")


def test_autograd_view_puts_each_parameter_gradient_inside_the_grad_fn_it_came_from(deep_graph):
    labels = [str(n.get_label()) for n in _all_nodes(_parse(to_dot(deep_graph, view="autograd", depth=10)))]
    grads = [lb for lb in labels if ".grad weight #1 ‖" in lb]
    assert len(grads) == 4 and all("AccumulateGrad" not in lb for lb in labels)


def test_a_trace_shows_itself_as_svg_in_a_notebook_or_as_text_without_graphviz(deep_graph, monkeypatch):
    with gradtrace.trace() as tr:
        torch.ones(2) * 2
    if have_graphviz():
        assert tr._repr_svg_().lstrip().startswith("<?xml")
    monkeypatch.setattr("gradtrace.views.dot.have_graphviz", lambda: False)
    assert tr._repr_svg_() is None
    assert "ops by category" in tr.summary()


def test_modules_inside_a_container_that_is_never_called_keep_their_full_paths():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    net = Net()
    with gradtrace.trace() as tr:
        net(torch.ones(1, 2))
    G = tr.graph
    assert [d["module"] for _, d in G.nodes(data=True) if d["kind"] == "op" and d["module"]] == [
        "Net.blocks.0", "Net.blocks.1"]
    assert G.nodes["mod:Net.blocks"]["type"] == "ModuleList"
    assert ("mod:Net.blocks", "mod:Net.blocks.0") in G.edges()


def test_library_work_for_one_user_line_is_drawn_as_one_node():
    with gradtrace.trace() as tr:
        layer = torch.nn.Linear(3, 3)  # empty + kaiming_uniform_ + empty + uniform_, by torch
        y = layer(torch.ones(1, 3))
    G = tr.graph
    init_ops = [d for _, d in G.nodes(data=True)
                if d["kind"] == "op" and d["direct"] is False and not d["module"]]
    assert len(init_ops) >= 4 and {d["line"] for d in init_ops} == {init_ops[0]["line"]}
    labels = [str(n.get_label()) for n in _all_nodes(_parse(to_dot(G, phase="all")))]
    assert sum("ops (init)" in lb for lb in labels) == 1
