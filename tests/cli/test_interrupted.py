"""A run stopped from outside still leaves its trace: SIGTERM (what torchrun, a job
scheduler or `kill` send) raises where the script is, the trace is written and marked
interrupted, and `gradtrace run` then dies of the signal as the script would have."""

import signal
import subprocess
import sys
import time

import gradtrace
from gradtrace.analyze.step_rows import step_rows

TRAIN = """
import pathlib, sys, time
import torch
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(100000):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == 30:
        pathlib.Path(sys.argv[1]).write_text("running")
    if step >= 30:
        time.sleep(0.01)
"""

OWN_HANDLER = """
import pathlib, signal, sys, time
import torch
def bye(signum, frame):
    print("own handler ran")
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
x = torch.ones(2) + 1
pathlib.Path(sys.argv[1]).write_text("running")
time.sleep(60)
"""


def _run_and_terminate(tmp_path, source, *options):
    script = tmp_path / "train.py"
    script.write_text(source)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "-o", str(tmp_path / "out"), "--no-svg",
                             *options, str(script), str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_run_terminated_by_sigterm_writes_its_trace_marked_interrupted(tmp_path):
    code, _, _ = _run_and_terminate(tmp_path, TRAIN)
    tr = gradtrace.load(tmp_path / "out")
    assert (tr.meta["status"], tr.meta["interrupted"], tr.meta["error"]["type"]) == ("error", "SIGTERM", "Terminated")


def test_the_terminated_trace_holds_the_steps_run_before_the_signal(tmp_path):
    _run_and_terminate(tmp_path, TRAIN)
    backward = [d for _, d in gradtrace.load(tmp_path / "out").graph.nodes(data=True) if d.get("kind") == "backward"]
    assert len(backward) >= 31


def test_a_run_kept_with_last_2_and_terminated_writes_its_last_steps_and_every_row(tmp_path):
    _run_and_terminate(tmp_path, TRAIN, "--last", "2")
    tr = gradtrace.load(tmp_path / "out")
    rows = step_rows(tr.graph)
    assert tr.meta["interrupted"] == "SIGTERM" and len(rows) >= 31 and [r["step"] for r in rows] == list(
        range(1, len(rows) + 1)) and tr.meta["first_step"] >= 30


def test_gradtrace_run_dies_of_the_signal_as_the_script_would(tmp_path):
    code, out, _ = _run_and_terminate(tmp_path, TRAIN)
    assert code == -signal.SIGTERM and "interrupted by SIGTERM" in out


def test_a_scripts_own_sigterm_handler_is_the_one_that_runs(tmp_path):
    code, out, _ = _run_and_terminate(tmp_path, OWN_HANDLER)
    tr = gradtrace.load(tmp_path / "out")
    assert code == 3 and "own handler ran" in out and "interrupted" not in tr.meta


def test_a_keyboard_interrupt_is_marked_as_sigint(tmp_path):
    with_interrupt = tmp_path / "ki.py"
    with_interrupt.write_text("import torch\ntorch.ones(2) + 1\nraise KeyboardInterrupt\n")
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "-o", str(tmp_path / "out"), "--no-svg",
                        str(with_interrupt)], capture_output=True, text=True)
    assert r.returncode == 130 and gradtrace.load(tmp_path / "out").meta["interrupted"] == "SIGINT"


# SIGTERM sent while the trace ends or is written (torchrun stopping the other ranks once
# one rank failed): it waits until the files are written, then the process dies of it.
SIGTERM_BEFORE = """
import importlib, os, signal, sys
module, _, attribute = sys.argv[3].partition(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)

def after_a_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

setattr(owner, name, after_a_sigterm)
from gradtrace.cli import main
main(["run", "-o", sys.argv[1], "--no-svg", sys.argv[2]])
"""


def _sigterm_before(tmp_path, where):
    (tmp_path / "train.py").write_text("import torch\nx = torch.ones(2) + 1\n")
    (tmp_path / "launch.py").write_text(SIGTERM_BEFORE)
    return subprocess.run([sys.executable, str(tmp_path / "launch.py"), str(tmp_path / "out"),
                           str(tmp_path / "train.py"), where], capture_output=True, text=True, timeout=120)


def test_a_sigterm_while_the_trace_is_written_waits_until_it_is_written(tmp_path):
    _sigterm_before(tmp_path, "gradtrace.cli.run:write_run_outputs")
    assert gradtrace.load(tmp_path / "out").meta["status"] == "ok"


def test_a_sigterm_while_the_trace_ends_is_not_raised_into_the_ending(tmp_path):
    _sigterm_before(tmp_path, "gradtrace.trace:Trace.__exit__")
    assert gradtrace.load(tmp_path / "out").meta["status"] == "ok"


def test_a_sigterm_held_while_writing_ends_the_run_after_it(tmp_path):
    r = _sigterm_before(tmp_path, "gradtrace.cli.run:write_run_outputs")
    assert r.returncode == -signal.SIGTERM and "trace" in r.stdout
