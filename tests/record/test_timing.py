"""`--time` / `gradtrace.trace(time=True)`: how long each op took, the wall time of the
call alone, and on CUDA the time between two events around it, read once at the end."""

import time

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analyze.costs import costs, totals
from gradtrace.cli import main
from gradtrace.record.timing import OpTimes, read_times


def _ops(G):
    return [d for _, d in G.nodes(data=True) if d.get("kind") == "op"]


def test_untimed_traces_have_no_times():
    with gradtrace.trace() as tr:
        torch.ones(3).add(1)
    assert all("time_ns" not in d for d in _ops(tr.graph))


def test_each_op_has_its_wall_time():
    with gradtrace.trace(time=True) as tr:
        a = torch.ones(3, requires_grad=True)
        (a * 2).sum().backward()
    ops = _ops(tr.graph)
    assert [d["name"] for d in ops][-1] == "Tensor.backward"
    assert all(isinstance(d["time_ns"], int) and d["time_ns"] > 0 for d in ops)


class _Slow(torch.Tensor):
    """A tensor whose ``neg`` takes 50 ms."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.neg:
            time.sleep(0.05)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_an_op_that_takes_50_ms_is_timed_at_least_that_long():
    x = torch.ones(2).as_subclass(_Slow)
    with gradtrace.trace(time=True) as tr:
        x.neg()
    neg = next(d for d in _ops(tr.graph) if d["name"] == "Tensor.neg")
    assert neg["time_ns"] >= 50_000_000


def test_the_recorders_own_work_is_outside_the_interval(monkeypatch):
    from gradtrace.record import stats

    compute = stats.compute

    def slow_compute(t):
        time.sleep(0.05)
        return compute(t)

    monkeypatch.setattr(stats, "compute", slow_compute)
    x = torch.ones(3)
    with gradtrace.trace(time=True) as tr:
        t0 = time.perf_counter_ns()
        x.neg()
        around = time.perf_counter_ns() - t0
    neg = next(d for d in _ops(tr.graph) if d["name"] == "Tensor.neg")
    assert around >= 50_000_000 > neg["time_ns"]


class _Event:
    """A stand-in for torch.cuda.Event: its clock is the wall clock, in ms."""

    def record(self):
        self.at = time.perf_counter_ns()

    def elapsed_time(self, end):
        return (end.at - self.at) / 1e6


class _CudaLike:
    """What OpTimes reads of an input: ``is_cuda``."""

    is_cuda = True


def test_an_op_on_cuda_is_timed_between_two_events_read_at_the_end():
    records = type("R", (), {"times": []})()
    times = OpTimes(records, event=_Event)
    started = times.start([(0, _CudaLike(), None, None)])
    time.sleep(0.01)
    times.stop(7, started)
    (ns, gpu), = read_times(records.times).values()
    assert gpu >= 10_000_000 and ns >= 10_000_000


def test_an_op_on_the_cpu_has_no_gpu_time():
    records = type("R", (), {"times": []})()
    times = OpTimes(records, event=_Event)
    times.stop(3, times.start([(0, torch.ones(1), None, None)]))
    assert read_times(records.times)[3][1] is None


def test_costs_sum_the_times_of_a_step():
    with gradtrace.trace(time=True) as tr:
        m = torch.nn.Linear(4, 2)
        m(torch.ones(3, 4)).sum().backward()
    c = costs(tr.graph)
    assert totals(c)["time_ns"] == sum(d["time_ns"] for d in _ops(tr.graph))


def test_gradtrace_run_time_adds_a_time_column_to_show_costs(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import torch\nm = torch.nn.Linear(3, 1)\nm(torch.ones(2, 3)).sum().backward()\n")
    r = CliRunner().invoke(main, ["run", "--time", "--no-svg", "-o", str(tmp_path / "t"), str(script)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--costs"], terminal_width=200)
    assert "time (--time): " in r.output and "┃ time " in r.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_op_on_cuda_has_its_gpu_time():
    a = torch.randn(1024, 1024, device="cuda")
    with gradtrace.trace(time=True) as tr:
        a @ a
    mm = next(d for d in _ops(tr.graph) if d["name"] == "Tensor.matmul")
    assert isinstance(mm["device_time_ns"], int) and mm["device_time_ns"] > 0


class _Watching(torch.Tensor):
    """A subclass that counts the calls its __torch_function__ sees."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_timing_reads_nothing_a_subclass_would_see():
    x = torch.ones(2).as_subclass(_Watching)
    _Watching.seen = []
    x.neg()
    untraced = list(_Watching.seen)
    _Watching.seen = []
    with gradtrace.trace(values="none", time=True):
        x.neg()
    assert _Watching.seen == untraced
