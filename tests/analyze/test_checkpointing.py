"""GT113: where activation checkpointing would pay, named with the memory it frees,
which is what checkpointing that module then frees (measured with torch.profiler)."""

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint

import gradtrace


class Net(nn.Module):
    def __init__(self, wide=2048, wrap=False):
        super().__init__()
        self.wrap = wrap
        self.stem = nn.Linear(256, 256)
        self.block = nn.Sequential(nn.Linear(256, wide), nn.GELU(), nn.Linear(wide, 256))
        self.head = nn.Linear(256, 1)

    def forward(self, x):
        h = self.stem(x)
        h = checkpoint(self.block, h, use_reentrant=False) if self.wrap else self.block(h)
        return self.head(h)


def _findings(model, x):
    with gradtrace.trace() as tr:
        model(x).sum().backward()
    return [f for f in gradtrace.check(tr) if f.code == "GT113"]


def _kept(model, x) -> int:
    """Bytes the forward pass leaves allocated, less its output (torch.profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = model(x).sum()
    return sum(e.self_cpu_memory_usage for e in prof.events()) - out.untyped_storage().nbytes()


def test_the_module_holding_most_activations_is_named():
    torch.manual_seed(0)
    found = _findings(Net(), torch.randn(1024, 256))
    assert len(found) == 1 and found[0].message.startswith("checkpointing Net.block (Sequential) would free ")
    assert "self.block" in found[0].fix


def test_the_memory_it_says_is_freed_is_what_checkpointing_frees():
    torch.manual_seed(0)
    model, x = Net(), torch.randn(1024, 256)
    said = _findings(model, x)[0].message.split(" would free ")[1].split(" of the ")[0]
    wrapped = Net(wrap=True)
    wrapped.load_state_dict(model.state_dict())
    freed = _kept(model, x) - _kept(wrapped, x)
    assert said == f"{freed / 2**20:.1f} MiB" == "16.0 MiB"


def test_a_step_with_little_activation_memory_has_no_finding():
    torch.manual_seed(0)
    assert _findings(Net(wide=64), torch.randn(16, 256)) == []
