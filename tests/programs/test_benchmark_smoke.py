"""The benchmark command runs end to end on its tiny configuration (no timing checks)."""

import json
import subprocess
import sys

from helpers import TESTS

ROOT = TESTS.parent


def test_benchmark_runs_on_the_tiny_configuration(tmp_path):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--tiny", "--no-torchlens",
         "--cpu-only", "--json", str(out), "--markdown", str(md)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for row in ("untraced", "no-op mode", "gradtrace none", "gradtrace stats", "gradtrace all",
                "torch.profiler", "resnet18 forward+backward on cpu", "gpt forward+backward on cpu",
                "Loop of", "Scale", "End to end"):
        assert row in text, f"{row!r} missing from the benchmark's output:\n{text[-3000:]}"
    result = json.loads(out.read_text())
    assert {"machine", "loop", "models", "scale", "run"} <= set(result)
    assert result["run"]["exit_codes"] == [0]
    assert result["run"]["gradtrace_s"] > 0 and result["run"]["python_mib"] > 0
    assert [r["variant"] for r in result["loop"]["rows"]] == [
        "untraced", "no-op mode", "gradtrace none", "gradtrace stats", "gradtrace all"]
    assert len(result["models"]["tables"]) == 2
    for t in result["models"]["tables"]:
        assert all(r["ms"] > 0 for r in t["rows"])
    (first, *_) = result["scale"]["rows"]
    for key in ("record_us_per_op", "peak_bytes_per_op", "save_s", "load_s", "dot_s", "build_s"):
        assert first[key] is not None and first[key] >= 0
    assert "| variant |" in md.read_text()


def test_run_scale_times_each_phase_of_the_loop_in_process():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_scale.py"), "--phases", "--ops", "200"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nodes"] > 200 and all(result[k] > 0 for k in ("record_s", "build_s", "save_s", "load_s"))


def test_viewer_open_reports_when_the_page_was_ready_in_a_real_browser():
    import shutil

    import pytest

    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[test])")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "viewer_open.py"), "--ops", "200", "--reps", "1",
                           "--no-resnet"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.splitlines()[0])
    assert row["ops"] == 200 and row["ready_ms"] > 0 and row["layout_ms"] > 0


def test_steps_window_times_steps_outside_the_window_against_untraced():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "steps_window.py"), "--steps", "20", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["untraced_us_per_step"] > 0 and result["outside_window_us_per_step"] > 0 and result["ratio"] > 0


def test_run_scale_times_each_phase_of_one_gradtrace_run():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_scale.py"), "--run-phases", "--ops", "200"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["exit_code"] == 0
    assert all(result["seconds"][k] > 0 for k in ("imports", "script", "build", "save", "summary", "check"))


def _same_traces(base, tmp_path):
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "same_traces.py"), "--base", str(base), "--only", "tensors",
         "--values", "none"], capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_same_traces_finds_a_tree_the_same_as_itself(tmp_path):
    proc = _same_traces(ROOT, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("1 of 1 traces the same")


def test_same_traces_names_what_another_tree_records_differently(tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(ROOT / "gradtrace", other / "gradtrace", ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "gradtrace" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "0.0.0+other-'))
    proc = _same_traces(other, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DIFFERENT none  examples/tensors.py  .graph.gradtrace_version:" in proc.stdout


def test_the_bytecode_count_of_an_op_is_the_same_on_every_run(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import opcodes

    first, counts = opcodes.loop_counts("none", ops=50)
    again, _ = opcodes.loop_counts("none", ops=50)
    assert first == again and first > 100
    assert counts[("op.py", "call")] > 0  # the per-op path itself is counted


def test_per_op_prints_each_variant_over_the_untraced_op():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "per_op.py"), "--rounds", "1", "--ops", "50"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert list(result) == ["untraced", "no-op mode", "none", "stats"]
    assert result["untraced"]["us_per_op"] > 0


def test_stats_threads_counts_each_size_it_was_asked_for():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stats_threads.py"), "--vectors", "2",
                           "--sizes", "2048,40000", "--no-timing"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout)["differing_1_vs_2_threads"]
    assert sorted(found) == ["2048", "40000"]
    assert all(0 <= c <= 2 for counts in found.values() for c in counts.values())


def test_the_fixed_order_statistics_are_the_same_bits_at_one_and_two_threads(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import stats_threads
    import torch

    t = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    was = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = stats_threads.fixed_order(t)
        torch.set_num_threads(2)
        two = stats_threads.fixed_order(t)
    finally:
        torch.set_num_threads(was)
    assert [v.hex() for v in one] == [v.hex() for v in two]
    reference = t.double()
    assert abs(one[2] - reference.mean().item()) < 1e-12 and abs(one[3] - reference.norm().item()) < 1e-9
