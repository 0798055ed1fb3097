"""The head of trace.json: a saved trace carries its summary in its graph attributes,
and `gradtrace show` reads it from there without parsing the nodes and edges."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analyze.summary import summarize
from gradtrace.cli import main
from gradtrace.graph.head import read_head
from gradtrace.graph.io import load_graph, save
from gradtrace.trace import load_summary


def _train_step():
    with gradtrace.trace() as tr:
        model = torch.nn.Linear(3, 2)
        x = torch.randn(4, 3)
        loss = model(x).pow(2).mean()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        x.double()
    return tr


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "step"
    _train_step().save(folder)
    return folder


def _show(*args):
    return CliRunner().invoke(main, ["show", *map(str, args)])


def _rewrite(folder, change):
    """Rewrite trace.json as gradtrace writes it (compact, graph first) after ``change(data)``."""
    p = folder / "trace.json"
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data, separators=(",", ":")))


def test_the_head_summary_equals_the_summary_of_the_loaded_trace(saved):
    s, _ = load_summary(saved)
    assert json.dumps(s) == json.dumps(summarize(gradtrace.load(saved).graph))


def test_the_head_holds_the_graph_attributes_of_the_trace(saved):
    head = read_head(saved)
    del head["summary"], head["steps"]
    assert head == gradtrace.load(saved).meta


def test_a_loaded_trace_does_not_carry_the_head_figures_among_its_graph_attributes(saved):
    meta = gradtrace.load(saved).meta
    assert "summary" not in meta and "steps" not in meta


def test_show_reads_the_summary_without_parsing_the_nodes(saved):
    # a node made unreadable after the head: the summary comes from the head alone
    p = saved / "trace.json"
    text = p.read_text()
    cut = text.index('"nodes":[') + len('"nodes":[')
    p.write_text(text[:cut] + "@@not json@@," + text[cut:])
    r = _show(saved)
    assert r.exit_code == 0 and "backward bw:0" in r.output


def test_show_ops_of_the_same_file_reads_everything_and_names_the_corruption(saved):
    p = saved / "trace.json"
    text = p.read_text()
    cut = text.index('"nodes":[') + len('"nodes":[')
    p.write_text(text[:cut] + "@@not json@@," + text[cut:])
    r = _show(saved, "--ops")
    assert r.exit_code == 2 and "corrupt trace file" in r.output


def test_show_without_an_option_prints_the_summary(saved):
    r = _show(saved)
    assert r.output.startswith("status: ok    ops: ")


def test_show_with_a_line_filter_and_no_option_prints_the_ops_of_that_line(saved):
    line = next(d["line"] for _, d in gradtrace.load(saved).graph.nodes(data=True) if d.get("name") == "Tensor.double")
    r = _show(saved, "--line", f"test_head.py:{line}", "--json")
    assert [row["op"] for row in json.loads(r.output)] == ["Tensor.double"]


def test_a_trace_without_a_head_summary_is_summarized_whole_with_the_same_text(saved, tmp_path):
    before = _show(saved).output
    save(load_graph(saved), tmp_path / "old")  # written with no summary, as older gradtrace did
    assert "summary" not in read_head(tmp_path / "old")
    assert _show(tmp_path / "old").output == before


def test_a_graph_saved_again_without_a_summary_keeps_no_stale_one(saved, tmp_path):
    G = load_graph(saved)
    G.graph["summary"] = {"stale": True}
    save(G, tmp_path / "again")
    assert "summary" not in read_head(tmp_path / "again")


def test_a_summary_of_the_wrong_shape_is_a_one_line_error_naming_it(saved):
    _rewrite(saved, lambda d: d["graph"]["summary"].update(ops="many"))
    r = _show(saved)
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "graph attribute summary.ops is a string" in r.output


def test_a_backward_root_of_the_wrong_shape_is_named_with_its_position(saved):
    _rewrite(saved, lambda d: d["graph"]["summary"]["backward"][0]["roots"][0].update(w=3))
    with pytest.raises(gradtrace.TraceError, match=r"summary\.backward\[0\]\.roots\[0\]\.w is an integer"):
        gradtrace.load(saved)


def test_a_file_cut_short_is_read_whole_and_named_corrupt(saved):
    p = saved / "trace.json"
    p.write_bytes(p.read_bytes()[:-200])
    r = _show(saved)
    assert r.exit_code == 2 and "corrupt trace file" in r.output


def test_a_newer_format_in_the_head_is_refused_by_show(saved):
    _rewrite(saved, lambda d: d["graph"].update(format="gradtrace/9"))
    r = _show(saved)
    assert r.exit_code == 2 and "gradtrace/9 is not supported" in r.output


def test_a_trace_written_by_another_json_writer_is_still_shown(saved):
    p = saved / "trace.json"
    before = _show(saved).output
    p.write_text(json.dumps(json.loads(p.read_text()), indent=2))
    assert read_head(saved) is None
    assert _show(saved).output == before


def test_a_head_larger_than_the_first_read_is_read_whole(saved):
    reasons = {f"t:{i}.0": "x" * 100 for i in range(2000)}  # ~220 KB of graph attributes
    _rewrite(saved, lambda d: d["graph"].update(values_not_saved=reasons))
    assert read_head(saved)["values_not_saved"] == reasons


def test_show_rank_of_a_single_trace_folder_checks_the_rank_from_the_head(saved):
    r = _show(saved, "--rank", "1")
    assert r.exit_code == 2 and "trace of rank 0 only" in r.output



def test_a_nan_loss_in_the_head_reads_back_as_a_float(tmp_path):
    with gradtrace.trace() as tr:
        w = torch.tensor([1.0, float("nan")], requires_grad=True)
        loss = w.sum()
        loss.backward()
    tr.save(tmp_path / "nan")
    s, _ = load_summary(tmp_path / "nan")
    b = s["backward"][0]
    assert math.isnan(b["roots"][0]["value"]) and b["grad_norm"] == pytest.approx(math.sqrt(2))
