"""All-reduce buckets of DistributedDataParallel, recorded with their statistics."""

import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn

import gradtrace


@pytest.fixture
def one_rank(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _bucket(one_rank):
    torch.manual_seed(0)
    with gradtrace.trace() as tr:  # DDP gets the recording comm hook when built while tracing
        model = nn.parallel.DistributedDataParallel(nn.Linear(4, 3))
        model(torch.randn(5, 4)).pow(2).sum().backward()
    (bucket,) = [d for _, d in tr.graph.nodes(data=True) if d.get("kind") == "collective"]
    return bucket, model


def test_a_bucket_keeps_the_statistics_of_its_local_gradients(one_rank):
    bucket, model = _bucket(one_rank)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    assert bucket["local"]["norm"] == pytest.approx(float(grads.norm()), rel=1e-12)


def test_a_bucket_keeps_the_statistics_of_the_reduced_gradients(one_rank):
    bucket, model = _bucket(one_rank)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    assert bucket["reduced"]["max"] == pytest.approx(float(grads.max()), rel=1e-12)


def test_a_group_destroyed_inside_the_trace_lives_until_the_trace_ends(tmp_path):
    # torch before 2.8 destroys a group holding the GIL while joining its workers, which
    # may still need the GIL to free what a Python comm hook left them: a hang.
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    with gradtrace.trace():
        model = nn.parallel.DistributedDataParallel(nn.Linear(4, 3))
        model(torch.randn(5, 4)).pow(2).sum().backward()
        group = weakref.ref(model.process_group)
        del model
        dist.destroy_process_group()
        alive_inside = group() is not None
    assert alive_inside and group() is None
