"""gradtrace check: each finding fires on a small real program and stays silent on the
course notes' clean examples and on a small model's training loop."""

import json
import re

import models
import numpy as np
import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analyze.checks import CHECKS, Finding, check_graph, finding_nodes, format_finding


def codes(findings, severity=None):
    return [(f.code, f.severity) for f in findings if severity is None or f.severity == severity]


def only(findings, code):
    found = [f for f in findings if f.code == code]
    assert len(found) == 1, [format_finding(f) for f in findings]
    return found[0]


def labels(f):
    return {t["label"] for t in f.tensors}


def roles(f):
    return {o.get("role"): o for o in f.ops}


# -- GT101: in-place write into a tensor saved for backward -------------------------------


def test_gt101_write_through_a_view_into_a_saved_output_names_saver_writer_and_lines():
    with gradtrace.trace() as tr:
        x = torch.randn(3, requires_grad=True)
        y = x.sigmoid()  # SigmoidBackward0 saves y
        v = y[0:2]
        v.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    f = only(check_graph(tr.graph), "GT101")
    assert f.severity == "error"
    r = roles(f)
    assert r["saved by"]["name"] == "Tensor.sigmoid" and r["saved by"]["code"] == "y = x.sigmoid()  # SigmoidBackward0 saves y"
    assert r["written by"]["name"] == "Tensor.mul_" and r["written by"]["code"] == "v.mul_(2)"
    assert r["written by"]["line"] == r["saved by"]["line"] + 2
    assert r["backward"]["name"] == "Tensor.backward"
    assert {"y", "v"} <= labels(f)
    assert "SigmoidBackward0" in f.message and "view `v`" in f.message
    assert f.file.endswith("test_check.py") and f.line == r["written by"]["line"]


def test_gt101_is_found_before_backward_runs_as_an_error():
    with gradtrace.trace() as tr:
        x = torch.randn(3, requires_grad=True)
        y = x.exp()
        y.add_(1)
    f = only(check_graph(tr.graph), "GT101")
    assert f.severity == "error" and "will raise" in f.message


def test_gt101_fix_rewrites_the_users_write_out_of_place():
    with gradtrace.trace() as tr:
        x = torch.randn(3, requires_grad=True)
        gate = x.sigmoid()
        gate.mul_(2)
    assert "`gate = gate.mul(2)`" in only(check_graph(tr.graph), "GT101").fix


def test_gt101_write_through_detach_alias_is_seen_by_autograd():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        y = x.exp()
        y.detach().zero_()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    f = only(check_graph(tr.graph), "GT101")
    assert f.severity == "error" and "`.detach()`" in f.message


def test_gt101_silent_when_the_write_comes_after_backward():
    with gradtrace.trace() as tr:
        x = torch.randn(3, requires_grad=True)
        y = x.sigmoid()
        y.sum().backward()
        y.mul_(2)
    assert "GT101" not in {f.code for f in check_graph(tr.graph)}


# -- GT102: writes autograd cannot see ------------------------------------------------------


def test_gt102_data_write_into_a_saved_tensor_is_an_error_and_the_gradient_is_wrong():
    with gradtrace.trace() as tr:
        x = torch.ones(1, requires_grad=True)
        y = x * x  # MulBackward0 saves x
        x.data *= 100
        y.backward()
    assert x.grad.item() == 200.0  # 2 * 100: the silent wrong gradient (2 before the write)
    f = only(check_graph(tr.graph), "GT102")
    assert f.severity == "error" and "`.data`" in f.message
    assert roles(f)["written by"]["code"] == "x.data *= 100"
    assert roles(f)["saved by"]["code"].startswith("y = x * x")


def test_gt102_notes_data_example_is_info_and_agrees_the_gradient_stays_2():
    with gradtrace.trace() as tr:
        x = torch.ones(1, requires_grad=True)
        y = 2 * x
        x.data *= 100
        y.backward()
    assert x.grad.item() == 2.0
    (f,) = check_graph(tr.graph)
    assert (f.code, f.severity) == ("GT102", "info") and "stay correct" in f.message


# -- GT103: write through a view -------------------------------------------------------------


def test_gt103_write_through_a_view_lists_the_base_it_changed():
    with gradtrace.trace() as tr:
        x = torch.zeros(2, 3)
        v = x.view(6)
        r = x[0, :]
        r += 1
    f = only(check_graph(tr.graph), "GT103")
    assert f.severity == "info" and labels(f) == {"r", "x", "v"}
    assert x[0].sum().item() == 3.0


def test_gt103_silent_for_a_write_to_a_tensor_that_is_not_a_view():
    with gradtrace.trace() as tr:
        x = torch.zeros(2, 3)
        v = x.view(6)
        x += 1
    assert check_graph(tr.graph) == []


# -- GT104: write into a reshape copy --------------------------------------------------------


def test_gt104_write_into_a_copy_reshape_made_warns():
    with gradtrace.trace() as tr:
        x = torch.zeros(4, 3)
        t = x.t().reshape(12)
        t[0] = 5
    assert x.sum().item() == 0.0
    f = only(check_graph(tr.graph), "GT104")
    assert f.severity == "warning" and "t" in labels(f)
    assert roles(f)["copied by"]["name"] == "Tensor.reshape" and roles(f)["written by"]["code"] == "t[0] = 5"


def test_gt104_silent_when_reshape_returned_a_view():
    with gradtrace.trace() as tr:
        x = torch.zeros(4, 3)
        t = x.reshape(12)
        t[0] = 5
    assert {f.code for f in check_graph(tr.graph)} == {"GT103"}  # a view: x changed


# -- GT105: numpy shared buffers -------------------------------------------------------------


def test_gt105_numpy_write_after_the_tensor_was_read_warns():
    with gradtrace.trace() as tr:
        a = np.ones(5)
        b = torch.from_numpy(a)
        s = b.sum()
        a += 1
        s2 = b.sum()
    assert s.item() == 5 and s2.item() == 10
    f = only(check_graph(tr.graph), "GT105")
    assert f.severity == "warning" and labels(f) == {"b"}
    assert roles(f)["read by"]["code"] == "s = b.sum()" and roles(f)["noticed at"]["code"] == "s2 = b.sum()"


def test_gt105_torch_write_into_a_buffer_numpy_shares_is_info():
    with gradtrace.trace() as tr:
        a = torch.ones(5)
        b = a.numpy()
        a.add_(1)
    assert b[0] == 2
    f = only(check_graph(tr.graph), "GT105")
    assert f.severity == "info" and "Tensor.numpy" in f.message


def test_gt105_silent_when_torch_tensor_copied_the_array():
    with gradtrace.trace() as tr:
        a = np.ones(5)
        c = torch.tensor(a)
        a += 1
        s = c.sum()
    assert check_graph(tr.graph) == []


# -- GT106: gradient path cut --------------------------------------------------------------


def test_gt106_notes_no_grad_y2_example_names_the_cut_and_the_join():
    with gradtrace.trace() as tr:
        x = torch.tensor(1.0, requires_grad=True)
        y1 = x ** 2
        with torch.no_grad():
            y2 = x ** 3
        y3 = y1 + y2
        y3.backward()
    assert x.grad.item() == 2.0
    f = only(check_graph(tr.graph), "GT106")
    assert f.severity == "warning" and {"y2", "y3", "x"} <= labels(f)
    assert roles(f)["cut by no_grad"]["code"] == "y2 = x ** 3" and roles(f)["joins the graph"]["code"] == "y3 = y1 + y2"


def test_gt106_detach_cut_is_info():
    with gradtrace.trace() as tr:
        x = torch.tensor(1.0, requires_grad=True)
        c = (x * 3).detach()
        (x * c).backward()
    f = only(check_graph(tr.graph), "GT106")
    assert f.severity == "info" and "detach()" in f.message


def test_gt106_silent_when_the_no_grad_result_is_never_differentiated():
    with gradtrace.trace() as tr:
        x = torch.tensor(1.0, requires_grad=True)
        with torch.no_grad():
            y2 = x ** 3
        z = y2 * 2
        (x ** 2).backward()
    assert check_graph(tr.graph) == []


# -- GT107 / GT112: leaves no backward reached; .grad of a non-leaf ---------------------------


def test_gt107_parameter_used_only_under_no_grad_gets_no_gradient():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        b = torch.ones(3, requires_grad=True)
        x = torch.randn(3)
        with torch.no_grad():
            h = x * w
        (h * b).sum().backward()
    assert w.grad is None
    f = next(f for f in check_graph(tr.graph) if f.code == "GT107")
    assert labels(f) == {"w"} and "no_grad" in f.message


def test_gt107_unused_parameters_are_one_info_not_warnings():
    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Parameter(torch.ones(2))
            self.aux = nn.Parameter(torch.ones(2))
            self.spare = nn.Parameter(torch.ones(2))

        def forward(self, x):
            self.side = x * self.aux  # computed, never part of the loss
            return x * self.used

    with gradtrace.trace() as tr:
        m = Three()
        u = torch.ones(2, requires_grad=True)
        plain = (u * 2).sum()  # a plain tensor not differentiated: not reported
        m(torch.ones(2)).sum().backward()
    f = only(check_graph(tr.graph), "GT107")
    assert f.severity == "info" and "2 not used on the way to any backward call's loss" in f.message
    assert "`Three.aux`" in f.message and "`Three.spare`" in f.message


def test_gt112_reading_grad_of_a_non_leaf_is_named_with_its_line():
    with gradtrace.trace() as tr:
        x = torch.ones(2, requires_grad=True)
        z = x * 2
        z.sum().backward()
        with pytest.warns(UserWarning):
            g = z.grad
    f = only(check_graph(tr.graph), "GT112")
    assert g is None and labels(f) == {"z"} and f.ops[0]["code"] == "g = z.grad"


# -- GT108: gradients accumulating across backward calls -----------------------------------


def _grads_by_autograd_grad_after_a_backward():
    """A full backward, then per-sample gradients by torch.autograd.grad (which leaves
    .grad alone), then a hand-written update from .grad."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x = torch.randn(4, 3)
    with gradtrace.trace() as tr:
        loss = model(x).pow(2).mean()
        loss.backward()
        per_sample = [torch.autograd.grad(model(x[i]).pow(2).sum(), list(model.parameters())) for i in range(4)]
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return tr.graph


def test_autograd_grad_records_no_leaf_grad():
    G = _grads_by_autograd_grad_after_a_backward()
    apis = {G.nodes[u]["api"] for u, _, k in G.edges(data="kind") if k == "leaf_grad"}
    assert apis == {"Tensor.backward"}


def test_gt108_silent_for_autograd_grad_calls_between_backward_and_update():
    assert [f for f in check_graph(_grads_by_autograd_grad_after_a_backward()) if f.code == "GT108"] == []


def test_gt106_silent_for_spectral_norms_power_iteration():
    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        main = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Conv2d(1, 2, 3)), nn.LeakyReLU(0.2))
        main(torch.randn(1, 1, 8, 8)).sum().backward()
    assert [f for f in check_graph(tr.graph) if f.code == "GT106"] == []


def test_gt108_silent_for_two_backward_calls_whose_sum_nothing_uses():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        (w * 2).sum().backward()
        (w * 3).sum().backward()
    assert w.grad[0].item() == 5.0
    assert check_graph(tr.graph) == []


def test_gt108_accumulation_then_one_step_is_info_and_reported_once():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(4):
            (w * 2).sum().backward()
        opt.step()
    f = only(check_graph(tr.graph), "GT108")
    assert f.severity == "info" and f.count == 3 and "accumulation" in f.message


def test_gt108_optimizer_steps_on_accumulated_gradients_warn():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(3):
            (w * 2).sum().backward()
            opt.step()
    f = only(check_graph(tr.graph), "GT108")
    assert f.severity == "warning" and "stale" in f.message
    assert "`opt.zero_grad()`" in f.fix


def test_gt108_silent_with_zero_grad_between_calls():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            (w * 2).sum().backward()
            opt.step()
    assert check_graph(tr.graph) == []


# -- GT109: out= resized ----------------------------------------------------------------------


def test_gt109_notes_5x3_out_for_a_4x3_sum_is_resized():
    with gradtrace.trace() as tr:
        x, y = torch.rand(4, 3), torch.rand(4, 3)
        result = torch.empty(5, 3)
        with pytest.warns(UserWarning, match="resized"):
            torch.add(x, y, out=result)
    f = only(check_graph(tr.graph), "GT109")
    assert f.severity == "warning" and "[5, 3]" in f.message and "[4, 3]" in f.message


def test_gt109_silent_for_a_right_shaped_or_empty_out():
    with gradtrace.trace() as tr:
        x, y = torch.rand(4, 3), torch.rand(4, 3)
        result = torch.empty(4, 3)
        torch.add(x, y, out=result)
        r0 = torch.empty(0)
        torch.add(x, y, out=r0)
    assert check_graph(tr.graph) == []


# -- GT110: first NaN/Inf -----------------------------------------------------------------------


def test_gt110_first_nan_in_forward_names_op_module_line_and_input_stats():
    class Head(nn.Module):
        def forward(self, x):
            return torch.log(x)

    with gradtrace.trace() as tr:
        net = nn.Sequential(nn.Identity(), Head())
        x = torch.tensor([-1.0, 1.0, 2.0])
        y = net(x)
        z = y * 2  # propagates the NaN: not the first
    f = only(check_graph(tr.graph), "GT110")
    assert f.severity == "error" and "NaN" in f.message
    assert f.ops[0]["name"] == "torch.log" and f.ops[0]["module"] == "Sequential.1" and "in module Sequential.1" in f.message
    assert "min=-1" in f.message


def test_gt110_first_nan_in_backward_names_the_derivative():
    with gradtrace.trace() as tr:
        x = torch.tensor([0.0, 4.0], requires_grad=True)
        y = torch.sqrt(x)
        (y * 0).sum().backward()  # 0 * inf in sqrt's derivative
    assert torch.isnan(x.grad).any()
    f = only(check_graph(tr.graph), "GT110")
    assert f.severity == "error" and "backward" in f.message
    assert roles(f)["derivative"]["name"] == "torch.sqrt"


def test_gt110_silent_for_a_minus_inf_attention_mask():
    with gradtrace.trace() as tr:
        s = torch.randn(3, 3)
        mask = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
        p = s.masked_fill(mask, float("-inf")).softmax(-1)
    assert check_graph(tr.graph) == []


def _causal_scores(n=4):
    """Attention scores with the additive causal mask of pytorch/examples' word
    language model: log(tril(ones)) puts -inf above the diagonal on purpose."""
    mask = torch.log(torch.tril(torch.ones(n, n)))
    w = torch.randn(n, n, requires_grad=True)
    return mask, w, (w + mask).softmax(-1)


def test_gt110_silent_for_a_log_of_tril_causal_mask():
    with gradtrace.trace() as tr:
        mask, w, p = _causal_scores()
        p.sum().backward()
    assert [f for f in check_graph(tr.graph) if f.code == "GT110"] == []


def test_gt110_silent_for_a_log_of_zero_on_the_branch_where_throws_away():
    with gradtrace.trace() as tr:
        pos = torch.arange(6).float()
        large = torch.log(pos / 2) * 3  # -inf at 0, where is_small picks pos instead
        bucket = torch.where(pos < 2, pos, large.clamp(max=5))
        y = bucket.sum()
    assert [f for f in check_graph(tr.graph) if f.code == "GT110"] == []


def test_gt110_finds_a_real_overflow_after_a_deliberate_mask():
    with gradtrace.trace() as tr:
        mask, w, p = _causal_scores()
        x = torch.full((3,), 4.0, requires_grad=True)
        blown = torch.exp(x * 200)  # overflows float32: inf, then the loss is inf
        (p.sum() + blown.sum()).backward()
    (f,) = [f for f in check_graph(tr.graph) if f.code == "GT110" and "forward" in f.message]
    assert "first Inf in forward" in f.message and f.ops[0]["name"] == "torch.exp"


# -- GT111: .to() that returned the same tensor --------------------------------------------


def test_gt111_to_the_same_device_then_a_write_warns():
    with gradtrace.trace() as tr:
        x = torch.ones(3)
        z = x.to("cpu")
        z.add_(1)
    assert x[0].item() == 2.0  # on a GPU, x would still be 1
    f = only(check_graph(tr.graph), "GT111")
    assert f.severity == "warning" and roles(f)["written by"]["code"] == "z.add_(1)"


def test_gt111_silent_for_a_copying_to_and_for_model_to():
    with gradtrace.trace() as tr:
        x = torch.ones(3)
        z = x.to(torch.float64)
        z.add_(1)
        model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).to("cpu")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.randn(4, 2)).sum().backward()
        opt.step()
    assert check_graph(tr.graph) == []


# -- clean programs -------------------------------------------------------------------------


def test_notes_tensor_section_gives_only_the_view_write_info():
    with gradtrace.trace() as tr:
        models.seed_tensors()
    assert codes(check_graph(tr.graph)) == [("GT103", "info")]


def test_notes_autograd_section_gives_the_y2_cut_and_the_data_info_and_no_error():
    with gradtrace.trace() as tr:
        models.seed_autograd()
    assert sorted(codes(check_graph(tr.graph))) == [("GT102", "info"), ("GT106", "warning")]


def test_mlp_training_loop_has_no_findings():
    with gradtrace.trace() as tr:
        models.training_steps(steps=3)
    assert check_graph(tr.graph) == []


def test_larger_training_loop_with_batchnorm_adam_clipping_and_eval_has_no_findings():
    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True),
                              nn.Dropout(0.1), nn.Linear(8, 3)).to(torch.device("cpu"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        for _ in range(2):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean()
    assert check_graph(tr.graph) == []


# -- the API -------------------------------------------------------------------------------


def _two_findings():
    with gradtrace.trace() as tr:
        a = torch.zeros(4)
        r = a[:2]
        r += 1  # GT103 info
        x = torch.ones(1, requires_grad=True)
        y = x * x
        x.data *= 100  # GT102 error
        y.backward()
    return tr


def test_findings_are_sorted_errors_first_then_in_op_order():
    fs = check_graph(_two_findings().graph)
    assert codes(fs) == [("GT102", "error"), ("GT103", "info")]


def test_check_accepts_a_trace_a_graph_and_a_saved_folder(tmp_path):
    tr = _two_findings()
    tr.save(tmp_path / "t", dot=False)
    for target in (tr, tr.graph, tmp_path / "t", str(tmp_path / "t")):
        assert codes(gradtrace.check(target)) == [("GT102", "error"), ("GT103", "info")]


def test_select_and_ignore_take_codes_prefixes_and_comma_lists():
    G = _two_findings().graph
    assert codes(check_graph(G, select=["GT103"])) == [("GT103", "info")]
    assert codes(check_graph(G, ignore="GT102,GT103")) == []
    assert len(check_graph(G, select="GT10")) == 2
    with pytest.raises(ValueError, match="GT999"):
        check_graph(G, select="GT999")


def test_finding_to_dict_is_json_and_nodes_are_graph_nodes():
    G = _two_findings().graph
    fs = check_graph(G)
    d = json.loads(json.dumps(fs[0].to_dict()))
    assert d["code"] == "GT102" and d["line"] == d["ops"][0]["line"] and d["explanation"] and d["fix"]
    assert all(n in G for n in finding_nodes(G)) and fs[0].nodes[0] in finding_nodes(G)


def test_format_finding_starts_with_file_line_code_severity():
    f = check_graph(_two_findings().graph)[0]
    first, *rest = format_finding(f).splitlines()
    assert first.split(": ", 1)[1].startswith("GT102 error: ") and first.split(":")[1] == str(f.line)
    assert any("x.data *= 100" in line for line in rest) and any(line.strip().startswith("tensors:") for line in rest)


def test_every_check_has_a_code_severity_title_and_example():
    assert list(CHECKS) == [f"GT{n}" for n in range(101, 114)]
    for c in CHECKS.values():
        assert c.severity in ("error", "warning", "info") and c.title and c.example and c.fix
    assert Finding("GT101", "error", "m").to_dict()["file"] is None


# -- correct code that must not be warned about (issue 11) ------------------------------------


def warned(findings, code=None):
    return [f for f in findings if f.severity != "info" and (code is None or f.code == code)]


def _train(model, x, steps=2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()


def test_gt107_silent_for_parameters_frozen_with_requires_grad_false():
    with gradtrace.trace() as tr:
        enc, head = nn.Linear(4, 4), nn.Linear(4, 1)
        for p in enc.parameters():
            p.requires_grad = False
        _train(nn.Sequential(enc, head), torch.randn(3, 4))
    f = only(check_graph(tr.graph), "GT107")
    assert f.severity == "info" and "2 frozen" in f.message


def test_gt107_silent_for_a_module_frozen_with_requires_grad_():
    with gradtrace.trace() as tr:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
        model[0].requires_grad_(False)
        _train(model, torch.randn(3, 4))
    assert warned(check_graph(tr.graph)) == []


def test_gt107_teacher_used_only_after_training_is_an_info_with_a_line():
    with gradtrace.trace() as tr:
        student, teacher = nn.Linear(4, 1), nn.Linear(4, 1)
        _train(student, torch.randn(3, 4))
        with torch.no_grad():
            teacher(torch.randn(3, 4))
    f = only(check_graph(tr.graph), "GT107")
    assert f.severity == "info" and f.file.endswith("test_check.py") and f.line is not None


def test_gt107_silent_for_the_layer_transformer_encoder_deep_copies():
    with gradtrace.trace() as tr:
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        enc(torch.randn(2, 3, 8)).sum().backward()
    fs = check_graph(tr.graph)
    assert warned(fs) == [] and "copied" in only(fs, "GT107").message


def test_no_finding_text_names_a_node_id():
    with gradtrace.trace() as tr:
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        enc(torch.randn(2, 3, 8)).sum().backward()
    text = "\n".join(format_finding(f, explain=True) for f in check_graph(tr.graph))
    assert text and not re.search(r"\bt:\d+\.\d+", text)


def test_gt107_silent_for_an_ema_copy_frozen_after_deepcopy():
    import copy

    with gradtrace.trace() as tr:
        model = nn.Linear(4, 1)
        ema = copy.deepcopy(model)
        ema.requires_grad_(False)
        _train(model, torch.randn(3, 4))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.copy_(0.9 * pe + 0.1 * p)
    assert warned(check_graph(tr.graph)) == []


def test_gt106_and_gt107_silent_for_a_dqn_target_network_under_no_grad():
    import copy

    with gradtrace.trace() as tr:
        q = nn.Linear(4, 2)
        target = copy.deepcopy(q)
        s, r = torch.randn(5, 4), torch.randn(5)
        with torch.no_grad():
            y = r + 0.9 * target(s).max(1).values
        nn.functional.mse_loss(q(s).max(1).values, y).backward()
    assert warned(check_graph(tr.graph)) == []


def test_gt108_silent_for_a_dcgan_step():
    with gradtrace.trace() as tr:
        G, D = nn.Linear(2, 4), nn.Linear(4, 1)
        optG, optD = torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)
        for _ in range(2):
            fake = G(torch.randn(3, 2))
            optD.zero_grad()
            (D(torch.randn(3, 4)).mean() - D(fake.detach()).mean()).backward()
            optD.step()
            optG.zero_grad()
            D(fake).mean().backward()
            optG.step()
    assert warned(check_graph(tr.graph)) == []


def test_gt111_silent_for_grad_scaler_and_scheduler_internals():
    with gradtrace.trace() as tr:
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1)
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(2):
            opt.zero_grad()
            scaler.scale(model(torch.randn(3, 4)).sum()).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
    assert [f for f in check_graph(tr.graph) if f.code == "GT111"] == []


def test_gt108_silent_after_grad_zero_():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.1)
        x.sum().backward()
        opt.step()
        x.grad.zero_()
        x.sum().backward()
        opt.step()
    assert check_graph(tr.graph) == []


def test_gt108_silent_after_grad_data_zero_():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.1)
        x.sum().backward()
        opt.step()
        x.grad.data.zero_()
        x.sum().backward()
        opt.step()
    assert check_graph(tr.graph) == []


def test_gt108_silent_with_zero_grad_set_to_none_false():
    with gradtrace.trace() as tr:
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            model(torch.randn(2, 3)).sum().backward()
            opt.step()
    assert check_graph(tr.graph) == []


def test_gt108_silent_after_grad_zero_when_no_values_were_kept():
    with gradtrace.trace(values="none") as tr:
        x = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.1)
        x.sum().backward()
        opt.step()
        x.grad.zero_()
        x.sum().backward()
        opt.step()
    assert check_graph(tr.graph) == []


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.sign()

    @staticmethod
    def backward(ctx, g):
        return g


def test_gt106_silent_for_a_straight_through_estimator():
    with gradtrace.trace() as tr:
        w = torch.randn(4, requires_grad=True)
        (_SignSTE.apply(w) * torch.arange(4.0)).sum().backward()
    assert w.grad is not None and check_graph(tr.graph) == []


def test_gt106_silent_for_reentrant_checkpoint():
    from torch.utils.checkpoint import checkpoint

    with gradtrace.trace() as tr:
        block, head = nn.Linear(4, 4), nn.Linear(4, 1)
        x = torch.randn(2, 4, requires_grad=True)
        head(checkpoint(block, x, use_reentrant=True)).sum().backward()
    assert warned(check_graph(tr.graph)) == [] and block.weight.grad is not None


def test_gt106_silent_for_torch_func_grad():
    from torch.func import grad

    with gradtrace.trace() as tr:
        w = torch.randn(3, requires_grad=True)
        g = grad(lambda v: v.sin().sum())(w)
        (w.cos().sum() + g.pow(2).sum()).backward()
    assert warned(check_graph(tr.graph)) == []


def test_gt102_silent_for_initialisation_through_data():
    with gradtrace.trace() as tr:
        model = nn.Linear(4, 2)
        nn.init.normal_(model.weight.data, std=0.02)
        model.bias.data.zero_()
        model(torch.randn(3, 4)).sum().backward()
    assert check_graph(tr.graph) == []


def test_gt102_info_fix_rewrites_the_users_data_write():
    with gradtrace.trace() as tr:
        x = torch.ones(1, requires_grad=True)
        y = 2 * x
        x.data *= 100
        y.backward()
    assert only(check_graph(tr.graph), "GT102").fix.startswith("`with torch.no_grad(): x *= 100`")


def test_gt103_fix_names_the_users_view_expression():
    with gradtrace.trace() as tr:
        batch = torch.zeros(3, 4)
        row = batch[1]
        row += 1
    assert "`row = batch[1].clone()`" in only(check_graph(tr.graph), "GT103").fix


# -- per-line suppression ------------------------------------------------------------------


def _view_write(tag):
    """A GT103 write through a view whose line carries ``tag`` as its comment."""
    with gradtrace.trace() as tr:
        batch = torch.zeros(2, 3)
        row = batch[0]
        if tag == "code":
            row += 1  # gradtrace: ignore[GT103]
        elif tag == "prefix":
            row += 1  # gradtrace: ignore[GT10]
        elif tag == "bare":
            row += 1  # gradtrace: ignore
        elif tag == "other":
            row += 1  # gradtrace: ignore[GT101]
        else:
            row += 1
    return tr.graph


def test_view_write_without_a_comment_is_reported():
    assert codes(check_graph(_view_write(None))) == [("GT103", "info")]


def test_ignore_comment_with_the_code_silences_that_line():
    assert check_graph(_view_write("code")) == []


def test_ignore_comment_with_a_code_prefix_silences_that_line():
    assert check_graph(_view_write("prefix")) == []


def test_bare_ignore_comment_silences_every_code_on_that_line():
    assert check_graph(_view_write("bare")) == []


def test_ignore_comment_for_another_code_silences_nothing():
    assert codes(check_graph(_view_write("other"))) == [("GT103", "info")]


def test_suppress_false_keeps_findings_on_ignored_lines():
    assert codes(check_graph(_view_write("code"), suppress=False)) == [("GT103", "info")]


def test_gt107_fires_on_a_hard_threshold_and_names_the_comparison():
    with gradtrace.trace() as tr:
        scores = torch.randn(5, requires_grad=True)
        values = torch.randn(5, requires_grad=True)
        mask = (scores > 0).float()
        (mask * values).sum().backward()
    f = only(check_graph(tr.graph), "GT107")
    assert f.severity == "warning" and labels(f) == {"scores"} and "`mask = (scores > 0).float()`" in f.message


class _Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


def test_gt102_silent_for_gradchecks_own_perturbations():
    with gradtrace.trace() as tr:
        x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_Swish.apply, (x,))
    assert warned(check_graph(tr.graph)) == []


def test_gt103_silent_for_nn_embedding_zeroing_its_padding_row():
    with gradtrace.trace() as tr:
        emb = nn.Embedding(5, 3, padding_idx=0)
        emb(torch.tensor([0, 1, 2])).sum().backward()
    assert check_graph(tr.graph) == []


def test_gt107_leaves_out_views_of_a_parameter_initialised_by_hand():
    with gradtrace.trace() as tr:
        lin = nn.Linear(4, 4)
        with torch.no_grad():
            for k in range(2):
                nn.init.orthogonal_(lin.weight[2 * k:2 * k + 2])
        lin(torch.randn(2, 4)).sum().backward()
    assert [f for f in check_graph(tr.graph) if f.code == "GT107"] == []


def test_finding_codes_maps_each_involved_node_to_the_codes_of_its_findings():
    from gradtrace.analyze.checks import finding_codes

    G = _two_findings().graph
    fs = check_graph(G)
    codes_at = finding_codes(G, fs)
    assert set(codes_at) == finding_nodes(G, fs)
    assert {c for cs in codes_at.values() for c in cs} == {"GT102", "GT103"}
    assert codes_at[fs[0].nodes[0]] == ["GT102"]


def test_statement_drops_a_trailing_comment_but_not_a_hash_inside_a_string():
    from gradtrace.analyze.checks.fixes import statement

    assert statement('print("a # b")  # gradtrace: ignore') == 'print("a # b")'


def test_gt108_stale_step_is_found_when_no_values_were_kept():
    with gradtrace.trace(values="none") as tr:
        w = torch.ones(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(3):
            (w * 2).sum().backward()
            opt.step()
    f = only(check_graph(tr.graph), "GT108")
    assert f.severity == "warning" and "stale" in f.message


def test_an_info_on_a_line_with_an_error_of_the_same_code_is_left_out():
    critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(8, 4, requires_grad=True)
    with gradtrace.trace() as tr:
        score = critic(x).mean()
        for p in critic.parameters():
            p.data.clamp_(-0.01, 0.01)
        score.backward()
    found = [(f.code, f.severity) for f in gradtrace.check(tr)]
    assert found == [("GT102", "error")]


def _written_in_a_loop():
    w = torch.ones(3, requires_grad=True)
    with gradtrace.trace() as tr:
        for _ in range(3):
            loss = (w * 2).sum()
            loss.backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
    return tr.graph


def test_the_index_lists_each_tensors_versions_as_a_full_scan_does():
    from gradtrace.analyze.checks.graph import Query, eager_versions

    G = _written_in_a_loop()
    q = Query(G)
    assert {tid: list(vs) for tid, vs in q.versions.items()} == {
        tid: list(vs) for tid, vs in eager_versions(G._node).items()}


def test_a_graph_whose_tensor_nodes_are_renamed_is_checked_the_same():
    import networkx as nx

    G = _written_in_a_loop()
    renamed = nx.relabel_nodes(G, {n: f"tensor-{n}" for n, d in G.nodes(data=True) if d["kind"] == "tensor"})
    assert [f.code for f in gradtrace.check(renamed)] == [f.code for f in gradtrace.check(G)]


def test_gt103_silent_for_a_slice_written_in_place_in_one_statement():
    with gradtrace.trace() as tr:
        x = torch.ones(4, 12)
        x_ = x.clone()
        x_[:, :10] *= 0.0  # pytorch/examples' forward-forward: writing part of x_ is the point
    assert [f for f in check_graph(tr.graph) if f.code == "GT103"] == []


def test_gt108_names_one_line_once_for_accumulation_in_a_loop():
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    with gradtrace.trace() as tr:
        for _ in range(2):
            model(x).sum().backward()  # two micro-steps, one line
        opt.step()
    f = only(check_graph(tr.graph), "GT108")
    assert "two backward calls at line" in f.message and " and line " not in f.message
