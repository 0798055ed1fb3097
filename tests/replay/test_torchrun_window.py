"""`gradtrace run --steps A:B` under torchrun: a DDP model built before the window
opens has its all-reduces recorded inside it and computes what it computes untraced
after it; with `--stop-at nonfinite`, a run whose learning rate is raised a
hundred-millionfold stops on every rank at the end of the same step, each rank's folder
holding its step rows. `--last 1` keeps each rank's last step and a row for every step.
Four launches for the whole module."""

import pytest
from helpers import torchrun

from gradtrace.trace import load, load_steps, load_summary

BLOW_UP_DDP = """\
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))[rank * 4:(rank + 1) * 4]
y = x.sum(1, keepdim=True)
for step in range(30):
    if step == 20:
        opt.param_groups[0]["lr"] = 1e8
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
print(f"rank {rank} finished")
dist.destroy_process_group()
"""

STEADY_DDP = """\
import sys

import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))[rank * 4:(rank + 1) * 4]
lines = []
for step in range(8):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    lines.append(f"step {step} loss {loss.item().hex()}")
lines.append("weights " + " ".join(p.detach().double().sum().item().hex() for p in model.parameters()))
with open(f"{sys.argv[1]}.rank{rank}", "w") as f:  # the ranks' stdout would interleave
    f.write("\\n".join(lines))
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """``(completed process, {rank: (rows, meta)})`` of two traced gloo ranks."""
    tmp = tmp_path_factory.mktemp("torchrun_window")
    script = tmp / "ddp_blow_up.py"
    script.write_text(BLOW_UP_DDP)
    out = tmp / "out"
    r = torchrun(tmp, script, "--no-svg", "--steps", "19:30", "--stop-at", "nonfinite", "-o", out)
    ranks = {k: load_steps(out / f"rank{k}") for k in (0, 1) if (out / f"rank{k}" / "trace.json").is_file()}
    return r, ranks


def _launch(tmp, source, name, *gradtrace_args):
    """Launch ``source`` on two ranks; return each rank's lines (its losses and weights)."""
    script = tmp / "ddp_steady.py"
    script.write_text(source)
    r = torchrun(tmp, script, *(("--no-svg", *gradtrace_args) if gradtrace_args else ()), script_args=(name,))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [(tmp / f"{name}.rank{k}").read_text().splitlines() for k in (0, 1)]


@pytest.fixture(scope="module")
def steady(tmp_path_factory):
    """``(untraced lines, traced lines, OUT)`` of a steady DDP run, traced with --steps 3:5."""
    tmp = tmp_path_factory.mktemp("torchrun_steady")
    untraced = _launch(tmp, STEADY_DDP, "untraced")
    traced = _launch(tmp, STEADY_DDP, "traced", "--steps", "3:5", "-o", str(tmp / "out"))
    return untraced, traced, tmp / "out"


@pytest.fixture(scope="module")
def ring(tmp_path_factory, steady):
    """``(untraced lines, lines traced with --last 1, OUT)`` of the steady DDP run."""
    tmp = tmp_path_factory.mktemp("torchrun_ring")
    traced = _launch(tmp, STEADY_DDP, "ring", "--last", "1", "-o", str(tmp / "out"))
    return steady[0], traced, tmp / "out"


def _of_kind(out, rank, kind) -> list:
    """The attributes of rank ``rank``'s trace nodes of ``kind``."""
    return [d for _, d in load(out / f"rank{rank}").graph.nodes(data=True) if d.get("kind") == kind]


def test_a_ddp_model_built_before_the_window_has_its_all_reduces_recorded_in_it(steady):
    _, _, out = steady
    for k in (0, 1):
        summary, _ = load_summary(out / f"rank{k}")
        buckets = _of_kind(out, k, "collective")
        assert len(summary["backward"]) == 2 and len(buckets) == 2 and all(d["world_size"] == 2 for d in buckets)


def test_the_windowed_ddp_run_computes_what_the_untraced_run_computes(steady):
    untraced, traced, _ = steady
    assert [len(lines) for lines in untraced] == [9, 9] and traced == untraced


def test_every_rank_stops_with_exit_code_3_and_writes_its_folder(launched):
    r, ranks = launched
    assert "exitcode  : 3" in r.stderr and "finished" not in r.stdout and sorted(ranks) == [0, 1]


def test_each_ranks_rows_start_at_the_windows_first_step(launched):
    _, ranks = launched
    assert all(rows[0]["step"] == 19 and meta["first_step"] == 19 for rows, meta in ranks.values())


def test_the_ranks_stop_at_the_end_of_the_same_step(launched):
    _, ranks = launched
    ends = {k: (rows[-1]["step"], meta["steps_seen"], meta["stopped_at"]["reason"]) for k, (rows, meta) in ranks.items()}
    assert ends[0] == ends[1] and ends[0][0] == ends[0][1] and ends[0][2] == "nonfinite"


def test_each_ranks_rows_show_the_learning_rate_raised_at_step_21(launched):
    _, ranks = launched
    for rows, _ in ranks.values():
        lr = {r["step"]: r["lr"] for r in rows}
        assert lr[20] == [0.01] and lr[21] == [1e8]


def test_a_ddp_run_kept_with_last_1_computes_what_the_untraced_run_computes(ring):
    untraced, traced, _ = ring
    assert traced == untraced


def test_each_rank_keeps_its_last_step_and_a_row_for_every_step(ring):
    _, _, out = ring
    for k in (0, 1):
        rows, meta = load_steps(out / f"rank{k}")
        backward, buckets = _of_kind(out, k, "backward"), _of_kind(out, k, "collective")
        assert [r["step"] for r in rows] == list(range(1, 9)) and meta["rank"] == k
        assert len(backward) == 1 and len(buckets) == 1
