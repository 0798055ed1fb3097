"""The replay explains a divergence: it names the likely cause and its expected size,
and confirms it by re-running the target with that cause switched off
(gradtrace/causes.py). Real replays of small programs, on causes that exist on CPU;
the CUDA causes (TF32) where a GPU is present."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import TESTS

from gradtrace.cli import main
from gradtrace.replay import ddp_placement, parse_target

ROOT = TESTS.parent
EXAMPLES = ROOT / "examples"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

AMP = """\
import torch

torch.manual_seed(0)
a = torch.randn(16, 32)
b = torch.randn(32, 8)
with torch.autocast("cpu", dtype=torch.bfloat16):
    c = a @ b
d = c.float().sum()
"""

# Deterministic algorithms on in the target named cpu (the baseline) only: there
# torch.empty fills its memory with NaN, elsewhere it holds whatever was there.
DETERMINISM = """\
import os

import torch

torch.use_deterministic_algorithms(os.environ.get("GRADTRACE_TARGET") == "cpu")
x = torch.arange(4.0)
buf = torch.empty(6)
buf[:4] = x  # the last two elements are never written
total = buf.sum()
"""

TF32 = """\
import torch

torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(0)
a = torch.randn(256, 1024, device="cuda")
b = torch.randn(1024, 256, device="cuda")
c = a @ b
"""


def replay(out, *args):
    r = CliRunner().invoke(main, ["replay", "-o", str(out), *map(str, args)])
    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return r, rep


def script(folder, text, name="prog.py"):
    p = folder / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def amp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("amp")
    return replay(tmp / "out", "--on", "cpu64", "--on", "cpu", script(tmp, AMP))


@pytest.fixture(scope="module")
def determinism(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    return replay(tmp / "out", "--on", "cpu", "--on", "cpu", script(tmp, DETERMINISM))


@pytest.fixture(scope="module")
def summed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sum")
    return replay(tmp / "out", "--on", "cpu", "--on", "ddp:2", EXAMPLES / "data_parallel.py", "--steps", "1",
                  "--reduction", "sum")


# -- autocast bf16 against the float64 reference --------------------------------------


def test_bf16_autocast_is_named_as_the_cause_of_the_first_divergence(amp):
    _, rep = amp
    ex = rep["comparisons"]["cpu"]["explanation"]
    assert ex["candidates"][0]["cause"] == "autocast" and ex["candidates"][0]["side"] == "b"


def test_bf16_autocast_is_expected_to_cost_bfloat16s_rounding(amp):
    _, rep = amp
    assert rep["comparisons"]["cpu"]["explanation"]["candidates"][0]["expected_rel"] == 2.0 ** -8


def test_a_rerun_with_autocast_off_agrees_so_autocast_is_confirmed(amp):
    _, rep = amp
    tried = rep["comparisons"]["cpu"]["explanation"]["tried"]
    assert tried["cause"] == "autocast" and tried["result"]["status"] == "confirmed"
    assert Path(tried["folder"]).name == "cpu-without-autocast"


def test_the_report_says_where_what_how_big_and_that_the_rerun_agrees(amp):
    r, _ = amp
    line = next(ln for ln in r.output.splitlines() if ln.startswith("First divergence at"))
    assert line.startswith("First divergence at `c = a @ b` (line 7): autocast ran this op in bfloat16 in cpu")
    assert "expected relative error ~4e-03" in line
    assert line.endswith("re-run with autocast off: agrees. Cause confirmed.")


def test_explaining_keeps_the_verdict_a_divergence(amp):
    r, rep = amp
    assert r.exit_code == 1 and rep["verdicts"]["cpu"] == "diverges"


# -- a deterministic-algorithms switch ---------------------------------------------------


def test_deterministic_algorithms_on_in_one_run_only_are_named_where_uninitialised_memory_is_read(determinism):
    _, rep = determinism
    top = rep["comparisons"]["cpu-2"]["explanation"]["candidates"][0]
    assert top["cause"] == "nondeterministic" and top["evidence"]["op"] == "Tensor.__setitem__"
    assert "torch.empty fills new memory with NaN" in top["text"]


def test_a_rerun_with_deterministic_algorithms_pinned_on_agrees(determinism):
    _, rep = determinism
    tried = rep["comparisons"]["cpu-2"]["explanation"]["tried"]
    assert tried["target"] == "cpu-2" and tried["result"]["status"] == "confirmed"


def test_the_rerun_holds_deterministic_algorithms_on_against_the_scripts_own_call(determinism):
    _, rep = determinism
    folder = Path(rep["comparisons"]["cpu-2"]["explanation"]["tried"]["folder"])
    assert json.loads((folder / "trace.json").read_text())["graph"]["math"]["deterministic_algorithms"] is True


def test_differing_nan_counts_are_told_baseline_first(determinism):
    _, rep = determinism
    note = rep["comparisons"]["cpu-2"]["first_divergence"]["figures"]["note"]
    assert note == "NaN/Inf counts differ (2/0 vs 0/0)"  # the baseline's NaN-filled empty first


# -- a summed loss per rank while DDP averages -------------------------------------------


def test_a_summed_loss_across_ranks_is_named_with_the_world_size_factor(summed):
    _, rep = summed
    top = rep["comparisons"]["ddp:2"]["explanation"]["candidates"][0]
    assert top["cause"] == "loss_reduction" and top["evidence"]["factor"] == pytest.approx(2.0, rel=1e-3)


def test_a_rerun_whose_allreduce_sums_the_gradients_agrees(summed):
    _, rep = summed
    tried = rep["comparisons"]["ddp:2"]["explanation"]["tried"]
    assert tried["result"]["status"] == "confirmed"
    assert (Path(tried["folder"]) / "rank1" / "trace.json").exists()


def test_the_report_says_how_the_ranks_were_placed(summed):
    r, rep = summed
    assert rep["runs"]["ddp:2"]["placement"]["backend"] == "gloo"
    assert "ddp:2: 2 ranks on CPU, gloo." in r.output


# -- a cause that does not explain it ------------------------------------------------------


def test_a_rerun_that_still_diverges_at_the_same_line_is_not_confirmed(tmp_path):
    from gradtrace.analyze.causes import confirmation
    from gradtrace.analyze.diff import diff_graphs
    from gradtrace.runner import run_script

    runs = []
    for scale in ("1.0", "1.001"):
        p = script(tmp_path, f"import torch\nx = torch.ones(4)\ny = x * {scale}\n", f"s{scale}.py")
        runs.append(run_script(str(p), [], values="stats").trace.graph)
    rep = diff_graphs(runs[0], runs[1])
    res = confirmation(rep, rep)
    assert res["status"] == "not confirmed"
    assert res["text"] == "still diverges at `y = x * 1.0` (line 3). Not confirmed."


# -- the switches themselves hold against the script's own settings ------------------------


def _in_child(code):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_the_tf32_switch_keeps_tf32_off_when_the_script_turns_it_on():
    out = _in_child("""
        import torch
        from gradtrace.analyze.causes import apply_switches
        apply_switches(["tf32"])
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        print(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    """)
    assert out == "False False highest"


def test_the_cudnn_benchmark_switch_keeps_benchmark_off_when_the_script_turns_it_on():
    out = _in_child("""
        import torch
        from gradtrace.analyze.causes import apply_switches
        apply_switches(["cudnn_benchmark"])
        torch.backends.cudnn.benchmark = True
        print(torch.backends.cudnn.benchmark)
    """)
    assert out == "False"


def test_the_autocast_switch_leaves_a_bf16_region_in_float32():
    out = _in_child("""
        import torch
        from gradtrace.analyze.causes import apply_switches
        apply_switches(["autocast"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            print((torch.ones(2, 2) @ torch.ones(2, 2)).dtype)
    """)
    assert out == "torch.float32"


def test_an_unknown_cause_is_refused_by_name():
    from gradtrace.analyze.causes import apply_switches

    with pytest.raises(ValueError, match="unknown cause 'gremlins'"):
        apply_switches(["gremlins"])


# -- where ddp:N ranks run --------------------------------------------------------------------


def test_ddp_with_as_many_gpus_as_ranks_puts_one_rank_per_gpu_over_nccl():
    p = ddp_placement(parse_target("ddp:2"), 2)
    assert (p["backend"], p["devices"], p["shared"]) == ("nccl", ["cuda:0", "cuda:1"], False)


def test_ddp_with_fewer_gpus_than_ranks_keeps_gloo_and_says_ranks_share_a_device():
    p = ddp_placement(parse_target("ddp:3"), 2)
    assert (p["backend"], p["devices"], p["shared"]) == ("gloo", ["cuda:0", "cuda:1", "cuda:0"], True)
    assert "ranks share a device" in p["text"]


def test_ddp_on_cpu_or_without_gpus_is_gloo_on_cpu():
    assert ddp_placement(parse_target("ddp:2:cpu"), 4)["devices"] == ["cpu", "cpu"]
    assert ddp_placement(parse_target("ddp:2"), 0)["backend"] == "gloo"


NCCL_SCRIPT = """\
import torch
import torch.distributed as dist

dist.init_process_group("nccl")
x = torch.ones(2) * (dist.get_rank() + 1)
dist.all_reduce(x)
if dist.get_rank() == 0:  # one writer: the ranks share output.log
    print("backend", dist.get_backend(), x.tolist())
dist.destroy_process_group()
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback: this machine has a GPU")
def test_a_script_asking_for_nccl_runs_its_ranks_on_gloo_where_there_is_no_gpu(tmp_path):
    r, rep = replay(tmp_path / "out", "--on", "ddp:2", "--timeout", "90", script(tmp_path, NCCL_SCRIPT))
    assert [x["status"] for x in rep["runs"]["ddp:2"]["ranks"]] == ["ok", "ok"], r.output
    assert "backend gloo [3.0, 3.0]" in (tmp_path / "out" / "ddp:2" / "output.log").read_text()


# -- CUDA causes, where a GPU is present ---------------------------------------------------------


@needs_cuda
def test_tf32_on_cuda_is_named_and_confirmed_by_a_rerun_with_tf32_off(tmp_path):
    r, rep = replay(tmp_path / "out", "--on", "cpu", "--on", "cuda", script(tmp_path, TF32))
    ex = rep["comparisons"]["cuda"]["explanation"]
    assert ex["candidates"][0]["cause"] == "tf32"
    assert ex["tried"]["result"]["status"] == "confirmed", r.output


# An index_add_ into few rows on CUDA accumulates with atomics.
NONDET_CUDA = """\
import torch

torch.manual_seed(0)
v = torch.randn(1_000_000, device="cuda") * 1000
idx = torch.randint(0, 3, (1_000_000,), device="cuda")
acc = torch.zeros(3, device="cuda").index_add_(0, idx, v)
"""


@needs_cuda
def test_index_add_on_cuda_is_named_as_a_non_deterministic_kernel(tmp_path):
    r, rep = replay(tmp_path / "out", "--on", "cpu", "--on", "cuda", script(tmp_path, NONDET_CUDA))
    if rep["verdicts"]["cuda"] == "agrees":
        pytest.skip("the CUDA sum happened to agree within tolerance: nothing to explain")
    causes = [c["cause"] for c in rep["comparisons"]["cuda"]["explanation"]["candidates"]]
    assert "nondeterministic" in causes, r.output


def test_no_explain_leaves_the_divergence_unexplained_and_runs_nothing_again(tmp_path):
    r, rep = replay(tmp_path / "out", "--no-explain", "--on", "cpu64", "--on", "cpu", script(tmp_path, AMP))
    assert r.exit_code == 1 and "explanation" not in rep["comparisons"]["cpu"]
    assert not (tmp_path / "out" / "cpu-without-autocast").exists()


def test_the_reruns_trace_records_the_cause_it_switched_off(determinism):
    _, rep = determinism
    folder = Path(rep["comparisons"]["cpu-2"]["explanation"]["tried"]["folder"])
    graph = json.loads((folder / "trace.json").read_text())["graph"]
    assert graph["replay"]["switched_off"] == ["nondeterministic"]
