"""Tracing never changes, crashes or leaks into the user's program: the cases
real programs hit (writes through views under no_grad, checkpointing, saved
tensor hooks, user modes and subclasses, the profiler, compile, jit, threads,
signals)."""

import collections
import gc
import signal
import threading
import warnings
import weakref

import numpy as np
import pytest
import torch
from helpers import ops
from models import Square
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

import gradtrace
from gradtrace.record import compat, modestack, patches
from gradtrace.record import mode as recorder
from gradtrace.record.hidden import hidden
from gradtrace.record.op import OpPath
from gradtrace.record.tensors import Tensors

MODES = ["none", "stats", "all"]


def traced(values, fn, *args):
    """Run ``fn`` under a trace; return its result and the trace."""
    with gradtrace.trace(values=values) as tr:
        out = fn(*args)
    return out, tr


# -- the recorder never raises into user code ---------------------------------------


@pytest.mark.parametrize("values", MODES)
def test_an_embedding_with_padding_idx_is_built_under_tracing(values):
    emb, tr = traced(values, torch.nn.Embedding, 10, 4, 0)
    assert torch.equal(emb.weight[0], torch.zeros(4))
    assert tr.meta["status"] == "ok"


def test_a_write_through_a_view_under_no_grad_runs_as_untraced():
    def init():
        torch.manual_seed(0)
        w = torch.randn(3, 4, requires_grad=True)
        with torch.no_grad():
            w[:, 0].zero_()
            w[1:2].fill_(1.0)  # an LSTM forget-gate bias is set this way
        return w

    w, tr = traced("stats", init)
    assert torch.equal(w, init())


def test_what_the_recorder_cannot_read_is_counted_as_unknown():
    def init():
        w = torch.randn(3, 4, requires_grad=True)
        with torch.no_grad():
            v = w[:, 0]
            v.zero_()

    _, tr = traced("stats", init)
    unknown = {u["what"]: u["count"] for u in tr.graph.graph["unknown"]}
    assert unknown.get("grad_fn", 0) >= 1


def test_the_summary_says_how_many_reads_were_unknown():
    def init():
        w = torch.randn(3, 4, requires_grad=True)
        with torch.no_grad():
            v = w[:, 0]
            v.zero_()

    _, tr = traced("stats", init)
    assert "unknown: " in tr.summary()


def test_a_strided_nested_tensor_is_traced_with_its_shape_unknown():
    def prog():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # nested tensors are a prototype
            nt = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
        return (nt * 2).to_padded_tensor(0.0)

    out, tr = traced("stats", prog)
    assert torch.equal(out, torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 2.0]]))
    assert any(u["what"] == "shape" for u in tr.graph.graph["unknown"])


def test_an_op_whose_outputs_cannot_be_read_still_returns_the_users_result(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(OpPath, "after", broken)
    y, tr = traced("stats", lambda: torch.ones(2) + 1)
    assert torch.equal(y, torch.full((2,), 2.0))
    assert [d["category"] for d in ops(tr.graph, "Tensor.add")] == ["unknown"]


def test_an_op_whose_inputs_cannot_be_read_runs_once(monkeypatch):
    def broken(self, t, origin="torch"):
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(Tensors, "register", broken)
    x = torch.ones(2)
    with gradtrace.trace() as tr:
        x.add_(1)
    assert torch.equal(x, torch.full((2,), 2.0))
    assert tr.meta["status"] == "ok"


def test_a_grad_read_warning_points_at_the_users_line():
    x = torch.ones(2, requires_grad=True)
    with gradtrace.trace():
        y = x * 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _ = y.grad
    assert [w.filename for w in caught] == [__file__]


# -- saved tensors: read back only where no unpack hook would run -------------------


def _checkpointed_batchnorm(prints):
    torch.manual_seed(0)
    bn, lin = torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4)

    def block(x):
        prints.append(1)
        return bn(lin(x)).relu()

    for _ in range(2):
        x = torch.randn(8, 4, requires_grad=True)
        checkpoint(block, x, use_reentrant=False).sum().backward()
    return bn


@pytest.mark.parametrize("values", MODES)
def test_a_non_reentrant_checkpoint_is_not_recomputed_by_tracing(values):
    plain_prints, traced_prints = [], []
    plain = _checkpointed_batchnorm(plain_prints)
    bn, _ = traced(values, _checkpointed_batchnorm, traced_prints)
    assert len(traced_prints) == len(plain_prints)
    assert int(bn.num_batches_tracked) == int(plain.num_batches_tracked)
    assert torch.equal(bn.running_mean, plain.running_mean)


def _hooked(counts):
    torch.manual_seed(0)
    x = torch.randn(5, requires_grad=True)

    def pack(t):
        counts["pack"] += 1
        return t

    def unpack(t):
        counts["unpack"] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = (x * x).sigmoid()
    y.sum().backward()
    return x.grad


@pytest.mark.parametrize("values", MODES)
def test_a_users_unpack_hook_runs_as_often_as_untraced(values):
    plain, counted = collections.Counter(), collections.Counter()
    g = _hooked(plain)
    tg, _ = traced(values, _hooked, counted)
    assert counted == plain
    assert torch.equal(tg, g)


def test_save_on_cpu_is_traced_and_gives_the_same_gradient():
    def prog():
        torch.manual_seed(0)
        x = torch.randn(6, requires_grad=True)
        with torch.autograd.graph.save_on_cpu():
            y = (x.exp() * x).sum()
        y.backward()
        return x.grad

    g, tr = traced("stats", prog)
    assert torch.equal(g, prog())


# -- invisible to the user's modes, subclasses, dispatch modes and the profiler ------


class LoggingMode(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.log = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.log.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


class LoggingDispatch(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.log = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.log.append(str(func))
        return func(*args, **(kwargs or {}))


class Logged(torch.Tensor):
    log: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.log.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def _small_step(subclass=False):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    if subclass:
        x = x.as_subclass(Logged)
    loss = lin(x).relu().sum()
    loss.backward()
    return lin.weight.grad


def _under(mode_factory, values, fn):
    m = mode_factory()
    if values is None:
        with m:
            fn()
    else:
        with m, gradtrace.trace(values=values):
            fn()
    return m.log


@pytest.mark.parametrize("values", MODES)
def test_an_outer_function_mode_sees_the_calls_it_sees_untraced(values):
    assert _under(LoggingMode, values, _small_step) == _under(LoggingMode, None, _small_step)


def _logged_inside(mode_factory):
    """The log of a mode the program enters itself."""
    m = mode_factory()
    with m:
        _small_step()
    return m.log


@pytest.mark.parametrize("values", MODES)
def test_a_function_mode_entered_inside_the_trace_sees_the_calls_it_sees_untraced(values):
    with gradtrace.trace(values=values):
        log = _logged_inside(LoggingMode)
    assert log == _logged_inside(LoggingMode)


@pytest.mark.parametrize("values", MODES)
def test_a_dispatch_mode_sees_the_aten_ops_it_sees_untraced(values):
    with gradtrace.trace(values=values):
        log = _logged_inside(LoggingDispatch)
    assert log == _logged_inside(LoggingDispatch)


@pytest.mark.parametrize("values", MODES)
def test_a_tensor_subclass_sees_the_calls_it_sees_untraced(values):
    Logged.log = []
    _small_step(subclass=True)
    plain = list(Logged.log)
    Logged.log = []
    with gradtrace.trace(values=values):
        _small_step(subclass=True)
    assert Logged.log == plain


def _wide_step(width):
    """A step whose weight takes a statistics route of its own by size: ``width`` 4, the
    list route; 32, NumPy's; 96, torch's."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(width, width)
    loss = lin(torch.randn(2, width)).relu().sum()
    loss.backward()


@pytest.mark.parametrize("width", [4, 32, 96])
def test_a_dispatch_mode_sees_no_statistics_of_any_size(width):
    def logged():
        m = LoggingDispatch()
        with m:
            _wide_step(width)
        return m.log

    with gradtrace.trace(values="stats"):
        log = logged()
    assert log == logged()


@pytest.mark.parametrize("width", [4, 32, 96])
def test_the_profiler_sees_no_statistics_of_any_size(width):
    from torch.profiler import profile

    def aten_ops(trace_it):
        with profile() as p:
            if trace_it:
                with gradtrace.trace(values="stats"):
                    _wide_step(width)
            else:
                _wide_step(width)
        return collections.Counter(e.name for e in p.events() if e.name.startswith("aten::"))

    assert aten_ops(True) == aten_ops(False)


@pytest.mark.parametrize("values", ["stats", "all"])
def test_the_profiler_sees_the_ops_it_sees_untraced(values):
    from torch.profiler import profile

    def aten_ops(trace_it):
        with profile() as p:
            if trace_it:
                with gradtrace.trace(values=values):
                    _small_step()
            else:
                _small_step()
        return collections.Counter(e.name for e in p.events() if e.name.startswith("aten::"))

    assert aten_ops(True) == aten_ops(False)


# -- memory: AccumulateGrad steals the gradient as untraced ---------------------------


@pytest.mark.parametrize("values", MODES)
def test_accumulate_grad_takes_the_arriving_gradient_without_a_copy(values):
    x = torch.randn(1000, requires_grad=True)
    arrived = []
    x.register_hook(lambda g: arrived.append(g.data_ptr()))
    with gradtrace.trace(values=values):
        (x * 2).sum().backward()
    assert arrived == [x.grad.data_ptr()]


# -- compile and jit ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_function_runs_and_gives_the_untraced_result(backend):
    def f(x, w):
        return (x @ w).relu().sum()

    torch._dynamo.reset()
    cf = torch.compile(f, backend=backend)  # compiled before the trace, first called inside
    torch.manual_seed(0)
    x, w = torch.randn(4, 4), torch.randn(4, 4, requires_grad=True)
    expected = f(x, w)
    expected.backward()
    grad = w.grad
    w.grad = None
    with gradtrace.trace() as tr:
        y = cf(x, w)
        y.backward()
    assert torch.equal(y, expected)
    assert torch.equal(w.grad, grad)
    assert tr.meta["status"] == "ok"


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # torch's own, untraced too
def test_jit_trace_of_a_module_works_under_tracing():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    x = torch.randn(1, 3)
    with gradtrace.trace():
        tm = torch.jit.trace(m, x)
    assert torch.equal(tm(x), m(x))


# -- threads, patches and signals ----------------------------------------------------


def test_two_threads_tracing_at_once_leave_nothing_patched_or_alive():
    orig = (torch.from_numpy, torch.autograd.grad_mode.inference_mode.__enter__)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    refs, errors = [], []

    def a():  # starts first, ends first
        try:
            with gradtrace.trace() as tr:
                a_in.set()
                b_in.wait()
                torch.from_numpy(np.ones(3)) + 1
            refs.append(weakref.ref(tr.recorder))
            del tr
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            a_out.set()

    def b():
        try:
            a_in.wait()
            with gradtrace.trace() as tr:
                b_in.set()
                a_out.wait()
                torch.from_numpy(np.ones(3)) + 1
            refs.append(weakref.ref(tr.recorder))
            del tr
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert errors == []
    assert (torch.from_numpy, torch.autograd.grad_mode.inference_mode.__enter__) == orig
    assert [r() for r in refs] == [None, None]


def test_a_finished_traces_recorder_is_not_kept_by_the_patches():
    with gradtrace.trace() as tr:
        torch.from_numpy(np.ones(2))
    ref = weakref.ref(tr.recorder)
    del tr
    gc.collect()
    assert ref() is None


def test_each_thread_records_its_own_from_numpy_calls():
    barrier = threading.Barrier(2)
    found = {}

    def work(name, n):
        with gradtrace.trace() as tr:
            barrier.wait()
            for _ in range(n):
                torch.from_numpy(np.ones(2))
            barrier.wait()
        found[name] = len(ops(tr.graph, "torch.from_numpy"))

    threads = [threading.Thread(target=work, args=(k, n)) for k, n in (("a", 1), ("b", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == {"a": 1, "b": 3}


def test_a_keyboard_interrupt_from_a_signal_reaches_the_user_as_itself():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    seen = collections.Counter()
    try:
        for i in range(12):
            signal.setitimer(signal.ITIMER_REAL, 0.002 + 0.0013 * i)
            try:
                with gradtrace.trace():
                    x = torch.ones(3, requires_grad=True)
                    for _ in range(100000):
                        (x * 2).sum().backward()
            except BaseException as e:
                seen[type(e).__name__] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert seen == {"KeyboardInterrupt": 12}
    assert patches.active() == 0


def test_torch_functions_are_back_on_after_a_trace_whose_hidden_block_an_interrupt_left_open():
    # A KeyboardInterrupt landing on hidden.__exit__'s first line (Python checks for
    # signals there) leaves the block's guards entered; the trace ends as the
    # interrupt goes past it.
    try:
        with pytest.raises(KeyboardInterrupt):
            with gradtrace.trace():
                hidden().__enter__()
                raise KeyboardInterrupt
        enabled = torch._C._is_torch_function_enabled()
    finally:
        torch._C.DisableTorchFunction().__exit__(None, None, None)  # whatever the outcome, later tests run enabled
    assert enabled


@pytest.mark.skipif(not compat.AUTOGRAD_BACKWARD_DISPATCHES,
                    reason="before torch 2.11 torch.autograd.backward pops no mode inside the recorder's redispatch")
def test_an_interrupt_between_torchs_mode_pop_and_its_try_reaches_the_user_as_itself(monkeypatch):
    # torch's _pop_mode_temporarily pops the mode, then enters the try that pushes it
    # back: a signal in between loses the entry for good. Here it lands on the third
    # pop of the recorder in `y.backward()`: the one in torch.autograd.backward's
    # dispatch, inside the recorder's own run of the call's body (where it was seen).
    real_pop, popped = torch.overrides._pop_mode, []

    def pop_then_interrupt():
        old = real_pop()
        if isinstance(old, recorder.Recorder):
            popped.append(old)
            if len(popped) == 3:
                raise KeyboardInterrupt
        return old

    monkeypatch.setattr(torch.overrides, "_pop_mode", pop_then_interrupt)
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(BaseException) as caught:
        with gradtrace.trace():
            (x * 2).sum().backward()
    assert caught.type is KeyboardInterrupt and torch._C._len_torch_function_stack() == 0


def test_an_ended_recorder_that_torch_puts_back_on_the_stack_records_nothing():
    # torch's _pop_mode_temporarily re-pushes the mode it popped when its generator is
    # closed; a signal landing inside it does that after the trace has ended.
    with gradtrace.trace() as tr:
        pass
    torch._C._push_on_torch_function_stack(tr.recorder)
    try:
        y = torch.ones(2) + 1
        n_ops = len(tr.recorder.records.ops)
    finally:
        removed = modestack.remove(tr.recorder)
    assert torch.equal(y, torch.full((2,), 2.0))
    assert (n_ops, removed) == (0, True)


def test_a_new_trace_sweeps_ended_recorders_off_the_stack():
    with gradtrace.trace() as old:
        pass
    torch._C._push_on_torch_function_stack(old.recorder)
    with gradtrace.trace():
        stack = [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())]
    assert old.recorder not in stack


# -- torch versions --------------------------------------------------------------------


def test_backward_through_the_pre_2_13_redispatch_records_custom_backward_ops(monkeypatch):
    monkeypatch.setattr(recorder, "redispatch_function", compat.redispatch_by_copy)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradtrace.trace() as tr:
        Square.apply(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([2.0, 4.0]))
    assert [d["name"] for d in ops(tr.graph) if d["phase"] == "backward"] == ["Tensor.mul", "Tensor.mul"]


def test_a_direct_autograd_backward_is_recorded_through_the_pre_2_11_patch(monkeypatch):
    monkeypatch.setattr(compat, "AUTOGRAD_BACKWARD_DISPATCHES", False)
    monkeypatch.setattr(recorder, "redispatch_function", compat.redispatch_by_copy)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradtrace.trace() as tr:
        patched = hasattr(torch.autograd.backward, "__wrapped__")
        torch.autograd.backward((x * 3).sum())
    assert patched
    assert torch.equal(x.grad, torch.tensor([3.0, 3.0]))
    assert [d["api"] for _, d in tr.graph.nodes(data=True) if d["kind"] == "backward"] == [
        "torch.autograd.backward"]
    assert getattr(torch.autograd.backward, "__wrapped__", None) is None


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_call_is_recorded_as_one_op_with_its_inputs_and_output(backend):
    def f(x, w):
        return (x @ w).relu().sum()

    torch._dynamo.reset()
    cf = torch.compile(f, backend=backend)
    x, w = torch.randn(4, 4), torch.randn(4, 4, requires_grad=True)
    with gradtrace.trace() as tr:
        y = cf(x, w)
        y.backward()
    G = tr.graph
    (op,) = [n for n, d in G.nodes(data=True) if d["kind"] == "op" and d["name"] == "torch.compile(f)"]
    ins = [u for u, _, k in G.in_edges(op, data="kind") if k == "input"]
    outs = [v for _, v, k in G.out_edges(op, data="kind") if k == "output"]
    # torch before 2.13 does not tell the compile wrapper's hooks what the call returned
    assert (len(ins), len(outs)) == (2, 1 if compat.TORCH >= (2, 13) else 0)
    assert [d["name"] for d in ops(G)] == ["torch.compile(f)", "Tensor.backward"]


def test_a_compiled_module_is_recorded_under_its_class_name():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    cm = torch.compile(model, backend="aot_eager")
    x = torch.randn(5, 3)
    expected = model(x)
    with gradtrace.trace() as tr:
        y = cm(x)
    assert torch.equal(y, expected)
    assert "torch.compile(Sequential)" in [d["name"] for d in ops(tr.graph)]


def test_a_function_compiled_inside_the_trace_is_recorded_as_one_op():
    def g(x):
        return x.sin() * 2

    torch._dynamo.reset()
    x = torch.randn(3)
    with gradtrace.trace() as tr:
        y = torch.compile(g, backend="eager")(x)
    assert torch.equal(y, g(x))
    assert [d["name"] for d in ops(tr.graph)] == ["torch.compile(g)"]


def test_a_full_backward_hook_warning_points_at_the_users_line_once():
    def run():
        lin = torch.nn.Linear(2, 2)
        lin.register_full_backward_hook(lambda m, gi, go: None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lin(torch.ones(1, 2)).sum().backward()
        return [(w.filename, w.lineno) for w in caught]

    plain = run()
    with gradtrace.trace():
        traced_ = run()
    assert traced_ == plain


def test_a_finished_traces_recorder_is_freed_by_reference_counting():
    """No cycle keeps the recorder (and its records) waiting for a full collection."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    x = torch.randn(3, 4)
    gc.collect()
    gc.disable()
    try:
        with gradtrace.trace() as tr:
            model(x).sum().backward()
        ref = weakref.ref(tr.recorder)
        del tr
        freed = ref() is None
    finally:
        gc.enable()
    assert freed
