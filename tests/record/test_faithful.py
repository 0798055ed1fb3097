"""Traced code computes exactly what it computes untraced, keeps no tensor alive,
survives exceptions, and leaves nothing installed."""

import gc
import linecache
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest
import torch
from helpers import ops, same_bits
from models import MLP, seed_autograd, seed_tensors, training_steps
from torch.nn.modules import module as _module

import gradtrace


@pytest.mark.parametrize("values", ["none", "stats", "all"])
@pytest.mark.parametrize("program", [seed_tensors, seed_autograd])
def test_seed_examples_are_bit_identical_traced_and_untraced(program, values):
    plain = program()
    with gradtrace.trace(values=values):
        traced = program()
    assert all(same_bits(a, b) for a, b in zip(plain, traced))


@pytest.mark.parametrize("values", ["none", "stats", "all"])
def test_a_training_loop_is_bit_identical_traced_and_untraced(values):
    losses, params = training_steps()
    with gradtrace.trace(values=values):
        t_losses, t_params = training_steps()
    assert all(same_bits(a, b) for a, b in zip(losses + params, t_losses + t_params))


@pytest.mark.parametrize("values", ["none", "stats"])
def test_the_trace_keeps_no_user_tensor_alive(values):
    with gradtrace.trace(values=values) as tr:
        x = torch.ones(3, requires_grad=True)
        y = (x * 2).exp()
        y.sum().backward()
        refs = [weakref.ref(x), weakref.ref(y), weakref.ref(x.grad)]
        del x, y
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert tr.graph.number_of_nodes() > 0


def test_an_exception_reaches_the_caller_and_the_trace_is_kept_with_status_error():
    tr = gradtrace.trace()
    with pytest.raises(ZeroDivisionError, match="boom"):
        with tr:
            x = torch.ones(2)
            y = x + 1
            raise ZeroDivisionError("boom")
    G = tr.graph
    assert G.graph["status"] == "error"
    assert G.graph["error"]["type"] == "ZeroDivisionError"
    assert "boom" in G.graph["error"]["traceback"]
    assert [d["name"] for d in ops(G)] == ["torch.ones", "Tensor.add"]
    del y


def test_an_op_that_raises_is_recorded_with_its_error():
    with pytest.raises(RuntimeError):
        with gradtrace.trace() as tr:
            torch.ones(2, 3) @ torch.ones(2, 3)
    (mm,) = ops(tr.graph, "Tensor.matmul")
    assert "RuntimeError" in mm["error"]


def test_tracing_works_inside_and_around_a_device_mode():
    with gradtrace.trace() as tr:
        with torch.device("meta"):
            a = torch.ones(3)
    assert a.is_meta
    assert tr.graph.nodes["t:0.0"]["device"] == "meta"
    with torch.device("meta"):
        with gradtrace.trace() as tr2:
            b = torch.ones(3) * 2
    assert b.is_meta and [d["name"] for d in ops(tr2.graph)] == ["torch.ones", "Tensor.mul"]


def _nested(values="none"):
    """An outer trace, and a trace of the program's own inside it writing ``a``."""
    x = torch.ones(3)
    with gradtrace.trace(values=values) as outer:
        a = x + 1
        with gradtrace.trace(values=values) as inner:
            b = a * 2
            a.add_(1)
        c = b - a
    return outer, inner, c


def test_a_trace_entered_inside_another_records_its_block():
    _, inner, _ = _nested()
    assert [d["name"] for d in ops(inner.graph)] == ["Tensor.mul", "Tensor.add_"]


def test_the_outer_trace_pauses_for_an_inner_one_and_marks_the_line():
    outer, _, _ = _nested()
    got = [(d["name"], d["category"]) for d in ops(outer.graph)]
    assert got == [("Tensor.add", "compute"), ("gradtrace.trace", "other"), ("Tensor.sub", "compute")]
    paused = next(d for d in ops(outer.graph) if d["name"] == "gradtrace.trace")
    assert paused["code"].startswith("with gradtrace.trace(values=values) as inner:")


def test_a_write_the_paused_trace_did_not_see_gives_a_new_version():
    outer, _, _ = _nested()
    g = outer.graph
    paused = next(n for n, d in g.nodes(data=True) if d.get("name") == "gradtrace.trace")
    writes = [(u, v) for u, v, d in g.edges(data=True) if d.get("kind") == "next_version" and d.get("external")
              and d.get("seen_at") == paused]
    assert writes == [("t:1.0", "t:1.1")]  # a = x + 1, then a.add_(1) inside the inner trace


def test_nested_traces_compute_what_the_program_computes_untraced():
    x = torch.ones(3)
    a = x + 1
    b = a * 2
    a.add_(1)
    assert same_bits(_nested("stats")[2], b - a)


def test_the_outer_trace_routes_numpy_calls_to_itself_again_once_the_inner_ends():
    with gradtrace.trace() as outer:
        with gradtrace.trace() as inner:
            torch.from_numpy(np.ones(2))
        torch.from_numpy(np.zeros(2))
    assert [d["name"] for d in ops(inner.graph)] == ["torch.from_numpy"]
    assert [d["name"] for d in ops(outer.graph)] == ["gradtrace.trace", "torch.from_numpy"]


def test_a_steps_window_due_to_open_inside_an_inner_trace_opens_when_it_ends():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        lin(torch.randn(4, 3)).sum().backward()
        opt.step()

    with gradtrace.trace(values="none", steps="2:3") as outer:
        with gradtrace.trace(values="none") as inner:
            step()  # step 1 ends in here: the window was due to open
            torch.full((2,), 3.0)
        step()
    names = [d["name"] for d in ops(outer.graph)]
    assert outer.meta["first_step"] == 2 and "Tensor.backward" in names
    assert "torch.full" not in names and "torch.full" in [d["name"] for d in ops(inner.graph)]


def test_a_trace_cannot_be_entered_twice():
    tr = gradtrace.trace()
    with tr:
        pass
    with pytest.raises(RuntimeError, match="already run"):
        with tr:
            pass


def _installed():
    return (
        len(_module._global_forward_pre_hooks), len(_module._global_forward_hooks),
        torch.from_numpy, torch.inference_mode.__enter__, torch.inference_mode.__exit__,
        torch._C._len_torch_function_stack(),
    )


def test_nothing_stays_installed_after_the_block():
    before = _installed()
    with gradtrace.trace():
        torch.from_numpy(np.ones(2))
        with torch.inference_mode():
            MLP()(torch.ones(1, 4))
    assert _installed() == before
    with pytest.raises(ValueError):
        with gradtrace.trace():
            raise ValueError
    assert _installed() == before


def test_module_ops_carry_their_module_path_and_parameters_their_names():
    model = MLP()
    with gradtrace.trace() as tr:
        model(torch.ones(1, 4))
    G = tr.graph
    assert [d["module"] for d in ops(G)] == [None, "MLP.fc1", "MLP.act", "MLP.fc2"]
    assert G.nodes["mod:MLP.fc1"]["type"] == "Linear"
    assert ("mod:MLP", "mod:MLP.fc1") in G.edges()
    labels = {d["label"] for _, d in G.nodes(data=True) if d["kind"] == "tensor"}
    assert {"MLP.fc1.weight", "MLP.fc2.bias"} <= labels


def test_a_backward_that_raises_keeps_no_gradient_alive():
    with gradtrace.trace(values="none") as tr:
        x = torch.ones(3, requires_grad=True)
        y = x.sigmoid()
        y.mul_(2)  # modifies what sigmoid saved: backward raises
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
        ref = weakref.ref(x)
        del x, y
    gc.collect()
    assert ref() is None
    assert "modified by an inplace operation" in next(
        d["error"] for _, d in tr.graph.nodes(data=True) if d["kind"] == "backward")


def test_a_warning_torch_raises_inside_an_op_points_at_the_users_line():
    x = torch.ones(4, 3)
    with gradtrace.trace():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.add(x, x, out=torch.empty(5, 3))  # resizes `out`: torch warns
    (w,) = [w for w in caught if "resized" in str(w.message)]
    assert w.filename == __file__
    assert linecache.getline(w.filename, w.lineno).strip().startswith("torch.add(x, x, out=")


def test_a_traced_scripts_globals_are_not_kept_alive_after_the_run(tmp_path):
    from gradtrace.runner import run_script

    script = tmp_path / "g.py"
    script.write_text("import torch\nbig = torch.ones(1000)\nsmall = big * 2\n")
    result = run_script(script, values="none")
    assert result.exit_code == 0
    gc.collect()
    # `type(o) is dict`, not isinstance: isinstance reads `__class__`, and some objects
    # (torch.distributed's deprecated `reduce_op`) warn when asked; the scan must not.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alive = [o for o in gc.get_objects() if type(o) is dict and o.get("__file__") == str(script)]
    assert alive == []


def _stderr_of(tmp_path, code: str, traced: bool) -> str:
    """The standard error of a small script run by python, or by `gradtrace run`."""
    script = tmp_path / "w.py"
    script.write_text(code)
    cmd = [sys.executable, "-m", "gradtrace", "run", "-o", str(tmp_path / "out"), str(script)] if traced \
        else [sys.executable, str(script)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120).stderr


_DROPOUT_3D = ("import warnings\nimport torch\nfrom torch import nn\n{filter}"
               "d = nn.Dropout2d(0.5)\n"
               "y = d(torch.ones(2, 3, 4))  # torch.nn.functional warns, attributed to dropout.py\n"
               "z = d(torch.ones(2, 3, 4))  # a second line reaching the same warning\n")


def test_a_warnings_filter_on_torchs_module_silences_a_torch_warning_when_traced(tmp_path):
    code = _DROPOUT_3D.format(filter='warnings.filterwarnings("ignore", module="torch")\n')
    assert "dropout2d" not in _stderr_of(tmp_path, code, traced=False)
    assert "dropout2d" not in _stderr_of(tmp_path, code, traced=True)


def test_a_torch_warning_reached_from_two_lines_prints_once_traced_as_untraced(tmp_path):
    code = _DROPOUT_3D.format(filter="")
    assert _stderr_of(tmp_path, code, traced=False).count("UserWarning: dropout2d") == 1
    assert _stderr_of(tmp_path, code, traced=True).count("UserWarning: dropout2d") == 1


def test_a_tensor_made_before_the_trace_is_freed_when_deleted_inside_it():
    x = torch.ones(3)
    with gradtrace.trace():
        ref = weakref.ref(x)
        del x  # naming tensors made before the trace must not have kept a copy of the locals
        gc.collect()
        alive = ref() is not None
    assert not alive


def test_a_modules_input_is_freed_when_deleted_after_the_call():
    model = torch.nn.Linear(2, 2)
    y = torch.ones(2)
    with gradtrace.trace(), torch.no_grad():
        out = model(y)  # naming the module by its variable reads this frame's names
        ref = weakref.ref(y)
        del y
        gc.collect()
        alive = ref() is not None
    assert not alive
