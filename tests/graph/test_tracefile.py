"""Trace folders on disk: saving what can be saved, and refusing, on load, what the
trace format does not allow, with one line (exit 2 in the CLI)."""

import json
import math
import os
import stat
import subprocess
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.cli import main
from gradtrace.views.dot import have_graphviz
from gradtrace.views.drawsize import SVG_MAX_LINES

# -- small real programs ------------------------------------------------------------------


def _quantized_program():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized creation functions
        with gradtrace.trace(values="all") as tr:
            x = torch.ones(3)
            torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
    return tr


def _complex32_program():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ComplexHalf is experimental
        with gradtrace.trace(values="all") as tr:
            x = torch.ones(3)
            x.to(torch.complex32)
    return tr


def _node_of_dtype(tr, dtype):
    return next(n for n, d in tr.graph.nodes(data=True) if d.get("kind") == "tensor" and d["dtype"] == dtype)


@pytest.fixture
def small_trace(tmp_path):
    """A saved trace of a small training step with every value kept."""
    with gradtrace.trace(values="all") as tr:
        w = torch.ones(3, requires_grad=True)
        loss = (w[:2] * 2).sum()
        loss.backward()
    folder = tmp_path / "small"
    tr.save(folder)
    return folder


def _edit(folder, change):
    """Rewrite trace.json of ``folder`` through ``change(data)``."""
    p = folder / "trace.json"
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data))


def _first(data, kind):
    return next(d for d in data["nodes"] if d["kind"] == kind)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_exit_2(r):
    return r.exit_code == 2 and r.output.strip().count("\n") == 0 and "Traceback" not in r.output


# -- values="all": what safetensors cannot hold -------------------------------------------


def test_a_quantized_value_does_not_stop_the_trace_being_saved(tmp_path):
    tr = _quantized_program()
    tr.save(tmp_path / "q")
    assert gradtrace.load(tmp_path / "q").graph.number_of_nodes() == tr.graph.number_of_nodes()


def test_a_quantized_value_is_listed_as_not_saved_with_its_dtype(tmp_path):
    tr = _quantized_program()
    tr.save(tmp_path / "q")
    node = _node_of_dtype(tr, "quint8")
    assert "quint8" in gradtrace.load(tmp_path / "q").meta["values_not_saved"][node]


def test_the_values_beside_a_quantized_one_are_still_saved(tmp_path):
    tr = _quantized_program()
    tr.save(tmp_path / "q")
    node = _node_of_dtype(tr, "float32")
    assert torch.equal(gradtrace.load(tmp_path / "q").values[node], torch.ones(3))


def test_a_complex32_value_is_listed_as_not_saved(tmp_path):
    tr = _complex32_program()
    tr.save(tmp_path / "c")
    node = _node_of_dtype(tr, "complex32")
    assert "complex32" in gradtrace.load(tmp_path / "c").meta["values_not_saved"][node]


def test_a_torch_func_wrapper_without_storage_is_saved_by_its_value(tmp_path):
    seen = {}

    def f(x):
        seen["x"] = x  # torch.func's wrapper: it has no storage once grad() returns
        return x.sin().sum()

    with gradtrace.trace(values="all") as tr:
        x = torch.ones(3)
    torch.func.grad(f)(torch.ones(3))
    node = next(iter(tr.values))
    tr.values[node] = seen["x"]
    tr.save(tmp_path / "f")
    assert torch.equal(gradtrace.load(tmp_path / "f").values[node], torch.ones(3))


def test_gradtrace_run_with_values_all_keeps_a_quantized_scripts_exit_code(tmp_path):
    script = tmp_path / "quant.py"
    script.write_text("import torch\nq = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)\n")
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-svg", "--values", "all", "-o",
                        str(tmp_path / "out"), str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_values_safetensors_has_the_mode_of_trace_json(small_trace):
    mode = stat.S_IMODE((small_trace / "trace.json").stat().st_mode)
    assert stat.S_IMODE((small_trace / "values.safetensors").stat().st_mode) == mode


# -- what is written loads back as it was -------------------------------------------------


def test_nan_statistics_load_back_as_nan(tmp_path):
    with gradtrace.trace() as tr:
        x = torch.tensor([1.0, float("nan")])
        x * 2
    tr.save(tmp_path / "n")
    assert math.isnan(gradtrace.load(tmp_path / "n").graph.nodes["t:0.0"]["stats"]["mean"])


def test_a_saved_trace_is_node_link_json_with_its_head_figures_in_the_graph_attributes(tmp_path):
    import networkx as nx

    with gradtrace.trace() as tr:
        torch.ones(2) + 1
    tr.save(tmp_path / "j")
    expected = json.loads(json.dumps(nx.node_link_data(tr.graph, edges="edges"), default=str))
    data = json.loads((tmp_path / "j" / "trace.json").read_text())
    assert data["graph"].pop("summary")["ops"] == 2
    assert data["graph"].pop("steps") == []  # no backward call
    assert data == expected


# -- size: no DOT that will not be drawn --------------------------------------------------


def test_save_writes_no_graph_dot_past_the_drawing_limit(tmp_path, capsys):
    with gradtrace.trace(values="none") as tr:
        x = torch.ones(2)
        for _ in range(SVG_MAX_LINES // 2 + 1):
            x = (x + 1) * 0.5
    tr.save(tmp_path / "big")
    assert not (tmp_path / "big" / "graph.dot").exists() and "graph.dot not written" in capsys.readouterr().err


def test_save_past_the_drawing_limit_removes_an_earlier_graph_dot(tmp_path):
    with gradtrace.trace(values="none") as small:
        torch.ones(2) + 1
    small.save(tmp_path / "t")
    with gradtrace.trace(values="none") as big:
        x = torch.ones(2)
        for _ in range(SVG_MAX_LINES // 2 + 1):
            x = (x + 1) * 0.5
    big.save(tmp_path / "t")
    assert not (tmp_path / "t" / "graph.dot").exists()


def test_save_writes_graph_dot_for_a_small_trace(tmp_path):
    with gradtrace.trace(values="none") as tr:
        (torch.ones(2) + 1) * 0.5
    tr.save(tmp_path / "small")
    assert "digraph" in (tmp_path / "small" / "graph.dot").read_text()


# -- load: a bad folder is one TraceError line --------------------------------------------


def test_load_of_an_empty_path_says_the_path_is_empty():
    with pytest.raises(gradtrace.TraceError, match="path is empty"):
        gradtrace.load("")


def test_a_folder_linked_to_itself_is_named_as_unreadable_not_missing(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    r = _cli("show", loop)
    assert _one_line_exit_2(r) and "symbolic links" in r.output


def test_load_rank_of_a_folder_linked_to_itself_says_it_cannot_be_read(tmp_path):
    from gradtrace.ranks import load_rank

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(gradtrace.TraceError, match="symbolic links"):
        load_rank(loop)


def test_deeply_nested_json_is_a_one_line_error(tmp_path):
    (tmp_path / "trace.json").write_text('{"graph": {"format": "gradtrace/1"}, "nodes": ' + "[" * 100_000
                                         + "]" * 100_000 + "}")
    r = _cli("show", tmp_path)
    assert _one_line_exit_2(r) and "nested too deeply" in r.output


def test_nodes_given_as_an_object_is_a_one_line_error(small_trace):
    _edit(small_trace, lambda d: d.update(nodes={}))
    r = _cli("show", small_trace)
    assert _one_line_exit_2(r) and "nodes" in r.output


def test_nodes_given_as_an_object_is_refused_by_dot_too(small_trace):
    _edit(small_trace, lambda d: d.update(nodes={}))
    assert _one_line_exit_2(_cli("dot", small_trace))


def test_statistics_of_the_wrong_type_name_the_node(small_trace):
    _edit(small_trace, lambda d: _first(d, "tensor").update(stats={"norm": "big"}))
    with pytest.raises(gradtrace.TraceError, match="node 't:0.0': stats norm"):
        gradtrace.load(small_trace)


def test_statistics_that_are_a_list_give_exit_2_in_show(small_trace):
    _edit(small_trace, lambda d: _first(d, "tensor").update(stats=[1, 2]))
    assert _one_line_exit_2(_cli("show", small_trace, "--backward"))


def test_an_op_name_of_the_wrong_type_names_the_attribute(small_trace):
    _edit(small_trace, lambda d: _first(d, "op").update(name=3))
    with pytest.raises(gradtrace.TraceError, match="attribute 'name' is an integer"):
        gradtrace.load(small_trace)


def test_a_graph_attribute_of_the_wrong_type_gives_exit_2_in_diff(small_trace, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in small_trace.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    _edit(other, lambda d: d["graph"].update(math="fast"))
    r = _cli("diff", small_trace, other)
    assert _one_line_exit_2(r) and "'math'" in r.output


def test_a_grad_reads_entry_that_is_not_an_object_gives_exit_2_in_check(small_trace):
    _edit(small_trace, lambda d: d["graph"].update(grad_reads=["t:0.0"]))
    r = _cli("check", small_trace)
    assert _one_line_exit_2(r) and "'grad_reads'" in r.output


def test_an_edge_to_a_missing_node_is_refused(small_trace):
    _edit(small_trace, lambda d: d["edges"][0].update(target="t:999.0"))
    with pytest.raises(gradtrace.TraceError, match="t:999.0' is not a node"):
        gradtrace.load(small_trace)


def test_a_value_whose_shape_differs_from_its_node_is_refused(small_trace):
    from safetensors.torch import load_file, save_file

    values = load_file(str(small_trace / "values.safetensors"))
    values["t:0.0"] = torch.ones(5)
    save_file(values, str(small_trace / "values.safetensors"))
    with pytest.raises(gradtrace.TraceError, match=r"value 't:0.0' has shape \[5\]"):
        gradtrace.load(small_trace)


def test_a_value_that_matches_no_node_is_refused(small_trace):
    from safetensors.torch import load_file, save_file

    values = load_file(str(small_trace / "values.safetensors"))
    values["t:77.0"] = torch.ones(1)
    save_file(values, str(small_trace / "values.safetensors"))
    with pytest.raises(gradtrace.TraceError, match="'t:77.0' matches no tensor node"):
        gradtrace.load(small_trace)


# -- dot: labels and Graphviz failures -----------------------------------------------------


needs_graphviz = pytest.mark.skipif(not have_graphviz(), reason="Graphviz is not installed")


def _graphviz_reads(dot_text: str) -> bool:
    return subprocess.run(["dot", "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=60).returncode == 0


@needs_graphviz
def test_control_characters_in_a_source_line_give_an_svg_that_is_well_formed_xml(tmp_path):
    import xml.etree.ElementTree as ET

    script = tmp_path / "ctl.py"
    script.write_bytes(b"import torch\nx = torch.ones(2) * 3  # \x1b[31m red \x01\n")
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "-o", str(tmp_path / "out"), str(script)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ET.parse(tmp_path / "out" / "graph.svg")  # raises on a control character


@needs_graphviz
def test_a_nul_in_a_saved_source_line_gives_dot_that_graphviz_reads(small_trace):
    _edit(small_trace, lambda d: _first(d, "op").update(code="x = 1  # \u0000"))
    r = _cli("dot", small_trace)
    assert r.exit_code == 0 and _graphviz_reads(r.output)


@needs_graphviz
def test_an_alias_that_looks_quoted_gives_dot_that_graphviz_reads(small_trace):
    def change(d):
        next(e for e in d["edges"] if e["kind"] == "view_of").update(alias='"a" -> "b"')

    _edit(small_trace, change)
    r = _cli("dot", small_trace, "--view", "memory")
    assert r.exit_code == 0 and _graphviz_reads(r.output)


def test_a_graphviz_failure_in_dot_is_a_one_line_error(small_trace, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 1\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    r = _cli("dot", small_trace, "-o", tmp_path / "x.svg")
    assert _one_line_exit_2(r) and "syntax error" in r.output


def test_a_trace_with_every_newer_attribute_saves_and_loads_back_the_same(tmp_path):
    # autocast per op and its casts, saves via a view, a parameter's data swapped,
    # a root module's variable, two tensors bound to one name
    model = torch.nn.Linear(3, 2)
    with gradtrace.trace() as tr:
        net = torch.nn.Linear(3, 2)
        x = torch.ones(4, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        y.float().sum().backward()
        net(x.requires_grad_()).sum().backward()
        model.double()
        x = x * 2
    back = gradtrace.load(tr.save(tmp_path / "t", dot=False)).graph
    G = tr.graph
    assert sorted(map(str, G.nodes(data=True))) == sorted(map(str, back.nodes(data=True)))
    assert sorted(map(str, G.edges(data=True))) == sorted(map(str, back.edges(data=True)))
    assert any(d.get("via") == "view" for _, _, d in G.edges(data=True))
    assert any(d.get("autocast") for _, _, d in G.edges(data=True))


def test_a_label_number_of_the_wrong_type_is_refused(small_trace):
    _edit(small_trace, lambda d: _first(d, "tensor").update(label_n="two"))
    with pytest.raises(gradtrace.TraceError, match="label_n"):
        gradtrace.load(small_trace)
