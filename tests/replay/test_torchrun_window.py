"""`gradtrace run --steps A:B --stop-at nonfinite` under torchrun: a DDP run whose
learning rate is raised a hundred-millionfold is recorded from step A on each rank, and
every rank stops at the end of the same step, its folder holding its step rows. One
launch for the whole module."""

import socket
import subprocess
import sys

import pytest

from gradtrace.trace import load_steps

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """``(completed process, {rank: (rows, meta)})`` of two traced gloo ranks."""
    tmp = tmp_path_factory.mktemp("torchrun_window")
    script = tmp / "ddp_blow_up.py"
    script.write_text(BLOW_UP_DDP)
    out = tmp / "out"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(_free_port()), "-m", "gradtrace", "run", "--no-svg",
                        "--steps", "19:30", "--stop-at", "nonfinite", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=180, cwd=tmp)
    ranks = {k: load_steps(out / f"rank{k}") for k in (0, 1) if (out / f"rank{k}" / "trace.json").is_file()}
    return r, ranks


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
