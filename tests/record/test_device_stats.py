"""Statistics on a device: written into rows of one buffer, read back with one copy.

The device route (``stats._device_stats``) runs on CPU tensors too, so every fact
here is checked without a GPU; the CUDA variants skip with "needs a CUDA GPU"."""

import gc
import math
import threading
import weakref

import pytest
import torch
from helpers import tensors
from torch.utils._python_dispatch import TorchDispatchMode

import gradtrace
from gradtrace.record import stats

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
SIZES = [(), (1,), (7,), (1000,), (300_000,)]
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64]
INTS = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool]
CONTENTS = ["normal", "nan", "inf", "all_nan", "all_inf"]
CASES = ([(dt, c) for dt in FLOATS for c in CONTENTS] + [(torch.float64, "huge")]
         + [(dt, "ints") for dt in INTS])


def make(dtype, shape, content, seed=0):
    """A tensor of ``dtype`` and ``shape`` holding ``content``."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if content == "ints":
        if dtype == torch.bool:
            return (torch.rand(n, generator=g) < 0.5).reshape(shape)
        lo = 0 if dtype == torch.uint8 else -100
        return torch.randint(lo, 100, (n,), generator=g).to(dtype).reshape(shape)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    if content == "huge":
        x = 1e300 * (1.0 + torch.rand(n, generator=g, dtype=torch.float64))
    elif content == "nan":
        x[::3] = math.nan
    elif content == "inf":
        x[1::5] = math.inf
        x[2::5] = -math.inf
    elif content == "all_nan":
        x[:] = math.nan
    elif content == "all_inf":
        x[:] = math.inf
        x[1::2] = -math.inf
    if dtype.is_complex:
        return torch.complex(x, 0.5 * x).to(dtype).reshape(shape)
    return x.to(dtype).reshape(shape)


def assert_same_stats(got: dict, want: dict):
    """Exact min, max and counts; mean and norm within the float64 promise (1e-12)."""
    for k in ("min", "max"):
        assert got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])), (k, got, want)
    assert (got["nan"], got["inf"]) == (want["nan"], want["inf"]), (got, want)
    for k in ("mean", "norm"):
        torch.testing.assert_close(torch.tensor(got[k], dtype=torch.float64),
                                   torch.tensor(want[k], dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12, equal_nan=True, msg=f"{k}: {got} vs {want}")


def device_route(t):
    """The device route's statistics of ``t``: forced on a CPU tensor, natural on CUDA."""
    h = stats._device_stats(t) if t.is_cpu else stats.compute(t)
    assert isinstance(h, stats._Row)
    return stats.finalize(h)


@pytest.fixture(params=["fused", "lean"])
def route(request, monkeypatch):
    """Both shapes of the float route: sums in one reduction (small) or apart (large)."""
    if request.param == "lean":
        monkeypatch.setattr(stats, "_FUSED_MAX", 0)
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: "x".join(map(str, s)) or "0d")
@pytest.mark.parametrize("dtype,content", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_device_route_matches_the_cpu_route(dtype, content, shape, device, route):
    t = make(dtype, shape, content)
    assert_same_stats(device_route(t.to(device)), stats.finalize(stats.compute(t)))


class CountOps(TorchDispatchMode):
    """The aten ops that run under it, less views and allocations (no kernel)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func is not torch.ops.aten.empty.memory_format:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def kernel_ops(t):
    stats._device_stats(t)  # the first row of a thread allocates its buffer
    with CountOps() as c:
        stats._device_stats(t)
    return c.ops


def test_a_float32_tensor_costs_ten_kernels():
    """copy to float64, nan_to_num, amin, abs, eq, ne, one sum for sum and both counts,
    nan_to_num, amax, vector_norm: 10."""
    assert len(kernel_ops(torch.randn(64, 64))) == 10


def test_a_float64_tensor_costs_twelve_kernels():
    """The ten of float32 plus max(|min|, |max|) and the division that keeps the
    squares of huge values finite: 12."""
    assert len(kernel_ops(torch.randn(64, 64, dtype=torch.float64))) == 12


def test_an_integer_tensor_costs_four_kernels():
    """copy to float64, aminmax, sum, vector_norm; its counts are the buffer's zeros: 4."""
    assert len(kernel_ops(torch.arange(100))) == 4


def test_the_device_route_reads_no_value_back():
    ops = kernel_ops(torch.tensor([1.0, math.nan, math.inf]))
    assert not [op for op in ops if "local_scalar_dense" in op or "_to_copy" in op]


@needs_cuda
def test_compute_on_cuda_never_synchronises():
    t = torch.randn(1000, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        h = stats.compute(t)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert isinstance(h, stats._Row)


@pytest.fixture
def host_copies(monkeypatch):
    """The calls to stats._to_host, in a list."""
    calls = []
    real = stats._to_host

    def counting(t):
        calls.append(t.shape)
        return real(t)

    monkeypatch.setattr(stats, "_to_host", counting)
    return calls


@pytest.fixture
def fresh_buffers():
    """This thread starts a new buffer, and leaves the next test a new one too."""
    stats._local.bufs = {}
    yield
    stats._local.bufs = {}


def test_finalizing_many_rows_of_one_buffer_copies_it_once(host_copies, fresh_buffers):
    handles = [stats._device_stats(torch.full((10,), float(i))) for i in range(50)]
    [stats.finalize(h) for h in handles]
    assert len(host_copies) == 1


def test_every_row_of_one_copy_is_its_own_tensor(fresh_buffers):
    handles = [stats._device_stats(torch.full((10,), float(i))) for i in range(50)]
    assert [stats.finalize(h)["mean"] for h in handles] == [float(i) for i in range(50)]


def test_a_row_written_after_the_copy_is_read_from_a_new_copy(host_copies, fresh_buffers):
    stats.finalize(stats._device_stats(torch.ones(3)))
    later = stats._device_stats(torch.full((3,), 5.0))
    assert stats.finalize(later)["max"] == 5.0 and len(host_copies) == 2


def test_a_full_buffer_gives_way_to_a_new_one_and_its_rows_stay_readable(monkeypatch, fresh_buffers):
    monkeypatch.setattr(stats, "_ROWS", 3)
    handles = [stats._device_stats(torch.full((4,), float(i))) for i in range(7)]
    assert [stats.finalize(h)["min"] for h in handles] == [float(i) for i in range(7)]
    assert len({id(h.buf) for h in handles}) == 3


def test_a_buffer_dies_with_its_last_handle(monkeypatch, fresh_buffers):
    monkeypatch.setattr(stats, "_ROWS", 2)
    handles = [stats._device_stats(torch.ones(4)) for _ in range(2)]
    first = weakref.ref(handles[0].buf.dev)
    stats._device_stats(torch.ones(4))  # the full buffer is no longer this thread's
    del handles
    gc.collect()
    assert first() is None


def test_a_handle_keeps_no_user_tensor_alive():
    t = torch.randn(100)
    ref = weakref.ref(t)
    h = stats._device_stats(t * 2)
    h2 = stats._device_stats(t)
    del t
    gc.collect()
    assert ref() is None and stats.finalize(h2) is not None and h is not None


def test_threads_never_share_a_row():
    out = {}

    def work(k):
        out[k] = [stats._device_stats(torch.full((5,), float(k * 1000 + i))) for i in range(200)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    means = {k: [stats.finalize(h)["mean"] for h in hs] for k, hs in out.items()}
    assert means == {k: [float(k * 1000 + i) for i in range(200)] for k in range(4)}


def test_a_buffer_begun_under_inference_mode_takes_rows_outside_it(device_route_on_cpu, fresh_buffers):
    with torch.inference_mode():
        stats.compute(torch.ones(3))
    s = stats.finalize(stats.compute(torch.full((3,), 2.0)))
    assert s is not None and s["mean"] == 2.0


def test_finalize_still_reads_a_tuple_of_0d_tensors():
    old = (torch.tensor(math.inf), torch.tensor(-math.inf), torch.tensor(math.nan),
           torch.tensor(math.nan), torch.tensor(2), torch.tensor(0))
    s = stats.finalize(old)
    assert math.isnan(s["min"]) and math.isnan(s["max"]) and s["nan"] == 2


@pytest.fixture
def device_route_on_cpu(monkeypatch):
    monkeypatch.setattr(stats, "_device_route_on_cpu", True)


def train_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradtrace.trace() as tr:
        x = torch.randn(32, 8)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
    return tr.graph


def all_stats(G):
    """Every statistics dict of the graph's nodes and edges, in a stable order."""
    nodes = [d["stats"] for _, d in sorted(G.nodes(data=True), key=lambda nd: str(nd[0])) if d.get("stats")]
    es = [d[k] for _, _, d in sorted(G.edges(data=True), key=lambda e: (str(e[0]), str(e[1]), e[2]["kind"]))
          for k in ("stats", "prior") if isinstance(d.get(k), dict)]
    return nodes + es


def test_a_trace_built_from_device_rows_has_the_cpu_statistics(device_route_on_cpu):
    got = all_stats(train_step())
    stats._device_route_on_cpu = False
    want = all_stats(train_step())
    assert len(got) == len(want) > 20
    for g, w in zip(got, want):
        assert_same_stats(g, w)


def test_a_traced_nan_is_counted_by_the_device_route(device_route_on_cpu):
    with gradtrace.trace() as tr:
        x = torch.tensor([1.0, float("nan"), float("inf"), -2.0])
    s = tr.graph.nodes[tensors(tr.graph, "x")[0]]["stats"]
    assert (s["nan"], s["inf"], s["min"], s["max"]) == (1, 1, -2.0, float("inf"))


@needs_cuda
def test_a_cuda_trace_has_the_cpu_statistics():
    with gradtrace.trace() as tr:
        x = torch.randn(1000, dtype=torch.float64)
        y = x.cuda() * 3
    G = tr.graph
    assert_same_stats(G.nodes[tensors(G, "y")[0]]["stats"], stats.finalize(stats.compute(x * 3)))


@pytest.mark.parametrize("n", [1000, 300_000])
def test_the_cpu_norm_of_tiny_float64_values_does_not_vanish(n):
    s = stats.finalize(stats.compute(torch.full((n,), 1e-170, dtype=torch.float64)))
    assert s["norm"] == pytest.approx(1e-170 * math.sqrt(n), rel=1e-12)


def test_the_cpu_norm_of_many_huge_float64_values_does_not_overflow():
    s = stats.finalize(stats.compute(torch.full((300_000,), 1e300, dtype=torch.float64)))
    assert s["norm"] == pytest.approx(1e300 * math.sqrt(300_000), rel=1e-12)
