"""`gradtrace run --stop-at nonfinite` under torchrun when one rank alone sees a NaN (a
metric its peers do not compute): that rank stops with exit code 3, its peers lose it in
their next all-reduce and end too, and every rank's trace is written. One launch."""

import pytest
from helpers import torchrun

from gradtrace.trace import load_summary

ONE_RANK_NAN = """\
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))[rank * 4:(rank + 1) * 4]
for step in range(20):
    opt.zero_grad()
    out = model(x)
    out.pow(2).mean().backward()
    opt.step()
    metric = out.detach() * float("nan") if rank == 0 and step == 5 else out.detach().abs()
print(f"rank {rank} finished")
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """``(completed process, {rank: meta})`` of two traced gloo ranks."""
    tmp = tmp_path_factory.mktemp("torchrun_stop")
    script = tmp / "one_rank_nan.py"
    script.write_text(ONE_RANK_NAN)
    out = tmp / "out"
    r = torchrun(tmp, script, "--no-svg", "--stop-at", "nonfinite", "-o", out)
    return r, {k: load_summary(out / f"rank{k}")[1] for k in (0, 1) if (out / f"rank{k}" / "trace.json").is_file()}


def test_the_rank_that_saw_the_nan_stops_with_exit_code_3(launched):
    r, ranks = launched
    assert "exitcode  : 3" in r.stderr and ranks[0]["stopped_at"]["reason"] == "nonfinite"


def test_its_peer_ends_too_and_writes_its_trace(launched):
    r, ranks = launched
    assert "finished" not in r.stdout and ranks[1]["status"] == "error" and "stopped_at" not in ranks[1]
