"""`gradtrace run --last N` and what reads its trace: the run report draws the loss over
every step and says what was kept, `show --steps` lists every step, and asking for the
ops of a step that fell out of the ring says so in one line."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gradtrace.cli import main

TRAIN = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(16, 4)
y = x.sum(1, keepdim=True)
for step in range(40):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """``(completed run, trace folder)`` of a 40-step loop run with --last 3."""
    tmp = tmp_path_factory.mktemp("last")
    (tmp / "train.py").write_text(TRAIN)
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-svg", "--last", "3", "-o", str(tmp / "out"),
                        str(tmp / "train.py")], capture_output=True, text=True, timeout=300)
    return r, tmp / "out"


def test_the_report_draws_the_loss_over_every_step_of_the_run(ran):
    r, _ = ran
    assert "loss over 40 steps:" in r.stdout and "gradient norm over 40 steps:" in r.stdout


def test_the_report_says_which_steps_were_kept_in_full(ran):
    r, _ = ran
    assert "--last 3: kept steps 38 on in full; the 37 steps before left a row each" in r.stdout


def test_show_steps_lists_every_step(ran):
    _, out = ran
    r = CliRunner().invoke(main, ["show", str(out), "--steps", "--json"])
    assert [row["step"] for row in json.loads(r.output)] == list(range(1, 41))


def test_the_ops_of_a_kept_step_are_listed(ran):
    _, out = ran
    r = CliRunner().invoke(main, ["show", str(out), "--ops", "--step", "39", "--json"])
    assert r.exit_code == 0 and any(row["op"] == "Tensor.backward" for row in json.loads(r.output))


def test_the_ops_of_a_dropped_step_are_a_one_line_error_that_says_why(ran):
    _, out = ran
    r = CliRunner().invoke(main, ["show", str(out), "--ops", "--step", "5"])
    assert r.exit_code == 2 and "step 5 fell out of the --last 3 ring: only its row is kept" in r.output


def test_last_0_is_a_one_line_error(tmp_path):
    (tmp_path / "t.py").write_text("print(1)\n")
    r = CliRunner().invoke(main, ["run", "--last", "0", str(tmp_path / "t.py")])
    assert r.exit_code == 2 and "--last" in r.output and "Traceback" not in r.output
