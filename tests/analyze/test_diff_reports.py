"""Diff reports that never contradict themselves: failed runs, parameter names and
dtypes, modules, tensor names, autocast, repeated differences (issue 13)."""

import re

from gradtrace.analyze.diff import diff_graphs, format_report_md
from gradtrace.outputs import write_run_outputs
from gradtrace.runner import run_script


def _trace(tmp_path, name, text, values="stats"):
    """Run ``text`` as a script under gradtrace; return its Trace (raising scripts too)."""
    script = tmp_path / f"{name}.py"
    script.write_text(text)
    res = run_script(script, [], values=values, print_traceback=False)
    write_run_outputs(res.trace, tmp_path / name, depth=3, svg=False)
    return res.trace


def _diff(tmp_path, text_a, text_b, values="stats", tag=None):
    ta, tb = _trace(tmp_path, "a", text_a, values), _trace(tmp_path, "b", text_b, values)
    A, B = ta.graph, tb.graph
    if tag:
        tag(A)
    rep = diff_graphs(A, B, values_a=ta.values, values_b=tb.values, names=("a", "b"))
    return rep, format_report_md(rep)


# -- 1. runs that raised -----------------------------------------------------------------

RAISING = """import torch
x = torch.ones(3, requires_grad=True)
(x * 2).sum().backward()
raise ValueError("bad data")
"""


def test_two_runs_that_both_raised_are_not_said_to_agree(tmp_path):
    rep, md = _diff(tmp_path, RAISING, RAISING)
    assert "Verdict: agrees" not in md
    assert not rep["agrees"] and rep["verdict"] == "both failed"


def test_two_runs_that_raised_the_same_exception_at_the_same_line_failed_the_same_way(tmp_path):
    rep, md = _diff(tmp_path, RAISING, RAISING)
    assert "both runs failed, the same way**: ValueError: bad data at a.py:4" in md
    assert rep["failed_same_way"] is True


def test_two_runs_that_raised_differently_are_told_apart_with_each_line(tmp_path):
    other = RAISING.replace('raise ValueError("bad data")', 'y = 1\nraise KeyError("missing")')
    rep, md = _diff(tmp_path, RAISING, other)
    assert "a: ValueError: bad data at a.py:4" in md and "b: KeyError: 'missing' at b.py:5" in md
    assert rep["failed_same_way"] is False


def test_one_run_that_raised_is_the_verdict_and_not_agrees(tmp_path):
    rep, md = _diff(tmp_path, RAISING.replace('raise ValueError("bad data")', ""), RAISING)
    assert "**Verdict: b failed**: ValueError: bad data at b.py:4" in md
    assert not rep["agrees"]


def test_two_runs_that_raised_in_folders_of_one_name_both_count_as_failed(tmp_path):
    ta, tb = _trace(tmp_path, "a", RAISING), _trace(tmp_path, "b", RAISING)
    rep = diff_graphs(ta.graph, tb.graph, names=("cpu", "cpu"))  # runs/v1/cpu against runs/v2/cpu
    assert rep["verdict"] == "both failed"


def test_no_divergence_in_runs_that_raised_says_where_the_comparison_stops(tmp_path):
    _, md = _diff(tmp_path, RAISING, RAISING)
    assert "agrees within tolerance, up to where a and b raised." in md


# -- 2 and 7. parameter dtypes -----------------------------------------------------------

LINEAR = """import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 2)
x = torch.randn(3, 4)
model(x).sum().backward()
"""
LINEAR64 = LINEAR.replace("nn.Linear(4, 2)", "nn.Linear(4, 2, dtype=torch.float64)").replace(
    "torch.randn(3, 4)", "torch.randn(3, 4, dtype=torch.float64)")


def test_the_parameter_dtype_row_has_one_column_per_run(tmp_path):
    _, md = _diff(tmp_path, LINEAR, LINEAR64)
    assert "| parameter dtypes | float32 (2) | float64 (2) **differs** |" in md


def test_parameters_whose_dtype_really_differs_are_listed_with_both_dtypes(tmp_path):
    rep, md = _diff(tmp_path, LINEAR, LINEAR64)
    assert rep["config"]["dtypes_differ"] == ["Linear.bias", "Linear.weight"]
    assert "Linear.bias (float32 in a, float64 in b)" in md


SEQUENTIAL = LINEAR.replace("model = nn.Linear(4, 2)", "model = nn.Sequential(nn.Linear(4, 2))")


def test_parameters_named_under_a_wrapper_are_no_dtype_difference(tmp_path):
    ta, tb = _trace(tmp_path, "a", SEQUENTIAL), _trace(tmp_path, "b", SEQUENTIAL)
    B = tb.graph.copy()
    for _, d in B.nodes(data=True):  # DDP's own names: the wrapped model's parameters under `module.`
        if d.get("param_kind"):
            d["label"] = "module." + d["label"].split(".", 1)[1]
    rep = diff_graphs(ta.graph, B, names=("a", "b"))
    assert "Dtypes differ" not in format_report_md(rep)
    assert rep["config"]["dtypes_differ"] == []


# -- 3. ops outside every module ---------------------------------------------------------

TOP_LEVEL = """import torch
torch.manual_seed(0)
x = torch.randn(5, 4)
h = torch.tanh(x)
s = h * 2.0
"""


def test_a_first_divergence_at_top_level_prints_no_module_none(tmp_path):
    rep, md = _diff(tmp_path, TOP_LEVEL, TOP_LEVEL.replace("h * 2.0", "h * 2.5"))
    assert rep["first_divergence"]["module"] is None
    assert "`None`" not in md and "at top level (in no module)" in md


# -- 4. tensors that are a module's attribute --------------------------------------------

LM = """import torch
from torch import nn
torch.manual_seed(0)


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.pos = torch.zeros(3, 8, requires_grad=True)

    def forward(self, x):
        return self.emb(x) + self.pos


model = LM()
loss = model(torch.randn(3, 4)).pow(2).mean()
loss.backward()
"""


def test_a_tensor_attribute_of_a_module_is_named_by_its_attribute_not_an_argument_position(tmp_path):
    rep, md = _diff(tmp_path, LM, LM.replace("torch.zeros(3, 8", "torch.ones(3, 8"))
    labels = {it["label"] for it in rep["numerics"]["diverging_items"] if it["what"] == "leaf_grad"}
    assert "LM.pos" in labels
    assert "arg1" not in md


def test_a_tensor_attribute_that_is_no_parameter_is_not_counted_as_one(tmp_path):
    rep, _ = _diff(tmp_path, LM, LM)
    assert sorted(rep["config"]["parameters"]) == ["LM.emb.bias", "LM.emb.weight"]


# -- 5. autocast -------------------------------------------------------------------------

AUTOCAST = """import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
x = torch.randn(32, 8)
with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=ENABLED):
    logits = model(x)
loss = logits.float().pow(2).mean()
loss.backward()
"""
REGION_LINE = 7


def _autocast_ops(G):
    """Mark the ops of the autocast region as the recorder does (when it does not yet)."""
    if any("autocast" in d for _, d in G.nodes(data=True) if d["kind"] == "op"):
        return
    for _, d in G.nodes(data=True):
        if d["kind"] == "op" and d.get("line") == REGION_LINE and d.get("phase") == "forward":
            d["autocast"] = {"cpu": "bfloat16"}


def _autocast_diff(tmp_path):
    return _diff(tmp_path, AUTOCAST.replace("ENABLED", "True"), AUTOCAST.replace("ENABLED", "False"),
                 tag=_autocast_ops)


def test_a_run_under_autocast_says_so_in_its_configuration_with_device_and_dtype(tmp_path):
    rep, md = _autocast_diff(tmp_path)
    (used,) = rep["config"]["autocast"][0]
    assert (used["device"], used["dtype"]) == ("cpu", "bfloat16") and rep["config"]["autocast"][1] == []
    assert re.search(r"\| autocast \| cpu bfloat16 \(\d+ ops\) \| not used \*\*differs\*\* \|", md)


def test_autocast_read_only_at_the_trace_ends_is_not_reported(tmp_path):
    _, md = _autocast_diff(tmp_path)
    assert "autocast_cpu" not in md


def test_the_first_divergence_under_autocast_is_the_op_inside_the_region(tmp_path):
    rep, md = _autocast_diff(tmp_path)
    assert rep["first_divergence"]["line"] == REGION_LINE
    assert "in a it ran inside an autocast region (cpu bfloat16)" in md


# -- 6. a difference repeated in a loop --------------------------------------------------

ALIAS_LOOP = """import torch
x = torch.ones(3)
for _ in range(4):
    y = x.to(DT)
    y.add_(1)
z = x * 1
"""


def test_an_aliasing_difference_repeated_in_a_loop_is_said_once_with_its_count(tmp_path):
    rep, md = _diff(tmp_path, ALIAS_LOOP.replace("DT", "torch.float64"), ALIAS_LOOP.replace("DT", "torch.float32"))
    (al,) = rep["structure"]["aliasing"]
    assert al["count"] == 4
    assert md.count("Aliasing differs") == 1 and "Aliasing differs (4 times)" in md


EXTRA_LOOP = """import torch
x = torch.ones(3)
for _ in range(3):
    x = x * 2
"""


def test_ops_only_in_one_run_from_one_line_are_listed_once_with_their_count(tmp_path):
    _, md = _diff(tmp_path, EXTRA_LOOP, EXTRA_LOOP.replace("x = x * 2", "x = x * 2\n    x = x.abs()"))
    only = [ln for ln in md.splitlines() if ln.startswith("- `Tensor.abs`")]
    assert len(only) == 1 and "3 times" in only[0]


# -- 8. other lines that misstated -------------------------------------------------------

INPLACE = """import torch
w = torch.zeros(3)
w.add_(1.0)
z = w * 2
"""


def test_an_in_place_op_that_diverges_is_counted_once(tmp_path):
    rep, _ = _diff(tmp_path, INPLACE, INPLACE.replace("w.add_(1.0)", "w.add_(2.0)"))
    add = [it for it in rep["numerics"]["diverging_items"] if it["op"]["name"] == "Tensor.add_"]
    assert len(add) == 1


def test_an_in_place_ops_input_is_told_apart_from_the_output_of_the_same_name(tmp_path):
    _, md = _diff(tmp_path, INPLACE, INPLACE.replace("w.add_(1.0)", "w.add_(2.0)"))
    assert "inputs that still agreed: w (before this op)" in md


UNINIT = """import torch
e = torch.empty(3)
e.fill_(1.0)
y = e * 2
"""


def test_uninitialized_outputs_are_said_not_compared_rather_than_among_the_compared(tmp_path):
    rep, md = _diff(tmp_path, UNINIT, UNINIT)
    line = next(ln for ln in md.splitlines() if ln.startswith("compared "))
    said, _ = line.split("Not compared:")
    assert "uninitialized" not in said and "1 uninitialized" in line


def test_a_run_without_modules_shows_no_batch_shape_rather_than_none(tmp_path):
    _, md = _diff(tmp_path, TOP_LEVEL, TOP_LEVEL)
    assert "| batch shape (per rank) | - | - |" in md


NOTHING_IN_COMMON_A = """import torch
x = torch.ones(3).abs()
"""
NOTHING_IN_COMMON_B = """import torch
y = torch.zeros(2).neg()
"""


def test_two_runs_with_nothing_compared_are_not_called_bit_identical(tmp_path):
    _, md = _diff(tmp_path, NOTHING_IN_COMMON_A, NOTHING_IN_COMMON_B)
    assert "bit-identical" not in md and "compared no tensors" in md


def test_a_first_divergence_with_nothing_compared_does_not_claim_every_tensor_agrees(tmp_path):
    _, md = _diff(tmp_path, NOTHING_IN_COMMON_A, NOTHING_IN_COMMON_B)
    assert "every compared tensor agrees" not in md


def test_the_data_parallel_section_shows_no_batch_shape_rather_than_none(tmp_path):
    ta, tb = _trace(tmp_path, "a", TOP_LEVEL), _trace(tmp_path, "b", TOP_LEVEL)
    B = tb.graph.copy()
    B.graph["world_size"] = 2  # one rank of two, of a script without modules
    md = format_report_md(diff_graphs(ta.graph, B, names=("a", "b")))
    assert "batch per rank - against -." in md
