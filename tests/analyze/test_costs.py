"""What each op, module and line costs (`gradtrace show DIR --costs`): FLOPs by
torch.utils.flop_counter's formulas, checked against FlopCounterMode, and the memory
saved for backward, each storage once, checked against torch.profiler's memory events
of the same forward pass run untraced."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

import gradtrace
from gradtrace.analyze.costs import by_module, costs, op_flops, totals
from gradtrace.cli import main


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).mean((2, 3)))


class Block(nn.Module):
    """A pre-norm Transformer block: attention (scaled_dot_product_attention) and an MLP."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TwoViews(nn.Module):
    """Saves two views of one activation (each half of ``h`` multiplied by a weight)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.randn(8))

    def forward(self, x):
        h = F.relu(self.fc(x))
        return h[:, :8] * self.w + h[:, 8:] * self.w


def _model(name):
    torch.manual_seed(0)
    return {"mlp": (MLP(), torch.randn(16, 32)), "cnn": (CNN(), torch.randn(4, 3, 8, 8)),
            "block": (Block(), torch.randn(2, 16, 32)), "views": (TwoViews(), torch.randn(4, 8))}[name]


def _traced(model, x):
    with gradtrace.trace() as tr:
        model(x).sum()
    return tr.graph


def _math_attention():
    # FlopCounterMode has no formula for the CPU flash kernel of attention; torch's math
    # kernel runs it as matrix products it counts
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


@pytest.mark.parametrize("name", ["mlp", "cnn", "block"])
def test_the_flops_are_what_flop_counter_mode_counts(name):
    model, x = _model(name)
    with _math_attention(), FlopCounterMode(display=False) as counter:
        model(x)
    assert totals(costs(_traced(model, x)))["flops"] == counter.get_total_flops() > 0


def test_an_op_without_a_formula_is_unknown_not_zero():
    model, x = _model("mlp")
    G = _traced(model, x)
    relu = next(n for n, d in G.nodes(data=True) if d.get("kind") == "op" and d["name"].endswith("relu"))
    assert op_flops(G, relu) is None
    assert totals(costs(G))["flops_unknown"] == 2  # relu and sum


def _saved_by_profiler(model, x) -> int:
    """The bytes a forward pass leaves allocated, less its output: what autograd keeps."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = model(x).sum()
    net = sum(e.self_cpu_memory_usage for e in prof.events())
    return net - out.untyped_storage().nbytes()


@pytest.mark.parametrize("name", ["mlp", "cnn", "block", "views"])
def test_the_activations_saved_are_what_the_allocator_kept(name):
    model, x = _model(name)
    expected = _saved_by_profiler(model, x)
    assert totals(costs(_traced(model, x)))["saved"]["activation"] == expected > 0


def test_two_views_of_one_activation_count_its_storage_once():
    model, x = _model("views")
    G = _traced(model, x)
    c = costs(G)
    h = 4 * 16 * 4  # the relu's output, of which both products saved a half
    muls = [op for op, saved in c.saved.items() if G.nodes[op]["name"].endswith("__mul__")]
    assert sum(sum(c.nbytes[s] for s, k in c.saved[op].items() if k == "activation") for op in muls) == 0
    assert totals(c)["saved"]["activation"] == h


def test_parameters_are_not_activations():
    model, x = _model("mlp")
    c = costs(_traced(model, x))
    assert totals(c)["saved"]["parameter"] == 64 * 10 * 4  # fc2's weight; fc1's input needs no gradient
    assert totals(c)["saved"]["input"] == x.numel() * 4


def test_each_module_counts_its_parameters():
    model, x = _model("cnn")
    rows = {r["module"]: r for r in by_module(_traced(model, x), costs(_traced(model, x)))}
    assert rows["CNN"]["params"] == sum(p.numel() for p in model.parameters())
    assert rows["CNN.bn"]["params"] == 16


def test_nodes_behind_a_saved_tensor_hook_of_the_programs_are_unknown():
    model, x = _model("mlp")
    with gradtrace.trace() as tr, torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        model(x).sum()
    t = totals(costs(tr.graph))
    assert t["saved_unknown"] > 0 and t["saved"]["activation"] == 0


def test_the_peak_of_saved_activations_is_reached_at_the_end_of_the_forward_pass():
    torch.manual_seed(0)
    model, opt, x = MLP(), None, torch.randn(16, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradtrace.trace() as tr:
        for _ in range(2):
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    c = costs(tr.graph, step=2)
    assert c.peak["step"] == 2 and G_name(tr.graph, c.peak["op"]) == "Tensor.square"
    assert c.peak["bytes"] == totals(c)["saved"]["activation"] == (16 * 64 + 16 * 10) * 4


def G_name(G, op):
    return G.nodes[op]["name"]


def test_show_costs_prints_modules_and_lines(tmp_path):
    model, x = _model("mlp")
    with gradtrace.trace() as tr:
        model(x).sum()
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--costs"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "costs of the whole trace: 86 kFLOP known" in r.output
    assert "  MLP.fc1" in r.output and "test_costs.py:" in r.output


def test_show_costs_json_holds_the_totals(tmp_path):
    model, x = _model("mlp")
    with gradtrace.trace() as tr:
        model(x).sum()
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--costs", "--json"])
    data = json.loads(r.output)
    assert data["total"]["flops"] == 2 * 16 * 32 * 64 + 2 * 16 * 64 * 10
    assert [m["module"] for m in data["modules"]] == ["", "MLP", "MLP.fc1", "MLP.fc2"]


def test_show_costs_of_a_step_the_trace_lacks_is_a_one_line_error(tmp_path):
    model, x = _model("mlp")
    with gradtrace.trace() as tr:
        model(x).sum().backward()
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--costs", "--step", "5"])
    assert r.exit_code == 2 and "step 5 is not in this trace" in r.output


def test_gradtrace_dot_puts_the_steps_costs_in_the_legend(tmp_path):
    model, x = _model("mlp")
    with gradtrace.trace() as tr:
        model(x).sum().backward()
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["dot", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "costs of the whole trace (gradtrace show --costs):" in r.output
    assert "86 kFLOP known (+2 ops unknown)" in r.output and "4.0 KiB of activations saved for backward" in r.output


def test_a_trace_without_flops_or_saved_memory_has_no_costs_in_its_legend(tmp_path):
    with gradtrace.trace() as tr:
        torch.ones(3).add(1)
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["dot", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "costs of" not in r.output


def test_show_costs_of_a_launched_run_prints_each_ranks_costs(tmp_path):
    model, x = _model("mlp")
    for rank in (0, 1):
        with gradtrace.trace(rank=rank, world_size=2) as tr:
            model(x).sum().backward()
        tr.save(tmp_path / "run" / f"rank{rank}")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "run"), "--costs", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert sorted(data) == ["0", "1"] and data["1"]["total"]["flops"] == 2 * 16 * 32 * 64 + 2 * 16 * 64 * 10


class Wrapped(nn.Module):
    """A block of two Linear and a GELU, wrapped in non-reentrant checkpoint, between two
    Linear. (With ``preserve_rng_state``, its default, checkpoint also keeps the RNG
    state, 5,056 bytes on the CPU, which the trace cannot see.)"""

    def __init__(self, reentrant=False):
        super().__init__()
        self.reentrant = reentrant
        self.stem, self.head = nn.Linear(32, 32), nn.Linear(32, 1)
        self.block = nn.Sequential(nn.Linear(32, 256), nn.GELU(), nn.Linear(256, 32))

    def forward(self, x):
        h = checkpoint(self.block, self.stem(x), use_reentrant=self.reentrant, preserve_rng_state=False)
        return self.head(h)


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpointed_block_keeps_its_input_and_what_is_saved_after_it(reentrant):
    torch.manual_seed(0)
    model, x = Wrapped(reentrant), torch.randn(64, 32)
    expected = _saved_by_profiler(model, x)
    with gradtrace.trace() as tr:
        model(x).sum()
    t = totals(costs(tr.graph))
    assert t["saved"]["activation"] == expected == 2 * 64 * 32 * 4  # the block's input, the head's input
    assert t["saved_unknown"] == 0


def test_a_checkpointed_blocks_rerun_in_backward_is_not_unknown_memory():
    torch.manual_seed(0)
    model, x = Wrapped(), torch.randn(64, 32)
    with gradtrace.trace() as tr:
        model(x).sum().backward()
    assert totals(costs(tr.graph))["saved_unknown"] == 0
