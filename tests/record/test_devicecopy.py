"""Host copies of values (values="all"): the value of the moment, never the program's memory."""

import pytest
import torch

from gradtrace.record.devicecopy import ValueCopies

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_cpu_copy_keeps_the_value_of_the_moment_it_was_taken():
    x = torch.arange(6.0).reshape(2, 3)
    copies = ValueCopies()
    copies.keep("t:0.0", x)
    x.mul_(10)
    assert copies.wait()["t:0.0"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_a_cpu_copy_of_a_strided_view_is_contiguous_and_equal():
    x = torch.arange(12.0).reshape(3, 4).t()
    copies = ValueCopies()
    copies.keep("v", x)
    kept = copies.wait()["v"]
    assert kept.is_contiguous() and torch.equal(kept, x)


def test_a_cpu_copy_does_not_share_the_programs_memory():
    x = torch.ones(4)
    copies = ValueCopies()
    copies.keep("k", x)
    assert copies.values["k"].untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


@needs_cuda
def test_a_cuda_copy_holds_the_value_before_a_later_in_place_write():
    x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    copies = ValueCopies()
    copies.keep("t", x)
    x.mul_(-1)
    kept = copies.wait()["t"]
    assert kept.device.type == "cpu" and torch.equal(kept, torch.arange(1 << 20, dtype=torch.float32))


@needs_cuda
def test_a_cuda_copy_does_not_synchronise_the_host():
    x = torch.randn(256, 256, device="cuda")
    copies = ValueCopies()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(8):
            copies.keep(i, x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.equal(v, x.cpu()) for v in copies.wait().values())


@needs_cuda
def test_cuda_copies_in_flight_stay_within_the_budget():
    x = torch.randn(1 << 18, device="cuda")  # 1 MiB
    copies = ValueCopies(budget=3 << 20)
    for i in range(10):
        copies.keep(i, x)
    assert copies.in_flight <= 3


@needs_cuda
def test_tracing_with_values_all_on_cuda_makes_no_synchronising_call_per_op():
    import gradtrace

    x = torch.randn(64, 64, device="cuda")
    with gradtrace.trace("all") as tr:
        torch.cuda.set_sync_debug_mode("error")
        try:
            y = (x @ x).relu()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    (relu,) = [n for n, d in tr.graph.nodes(data=True) if d.get("kind") == "op" and d["name"].endswith("relu")]
    (out,) = [v for _, v, k in tr.graph.out_edges(relu, data="kind") if k == "output"]
    assert torch.equal(tr.values[out], y.cpu())
