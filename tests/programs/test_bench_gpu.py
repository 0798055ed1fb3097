"""``benchmarks/bench.py --device cuda``: the GPU table, and its one-line refusal without a GPU.
The table's code runs here on CPU (``--sections gpu --device cpu``, tiny models)."""

import json
import subprocess
import sys

import pytest
import torch
from helpers import TESTS

ROOT = TESTS.parent
BENCH = ROOT / "benchmarks" / "bench.py"


def bench(*args, timeout=300):
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal: this machine has a GPU")
def test_device_cuda_without_a_gpu_says_so_in_one_line_and_exits_2():
    r = bench("--device", "cuda")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"bench.py: --device cuda needs a CUDA GPU; torch.cuda.is_available() is False here "
        f"(torch {torch.__version__})"]


@pytest.fixture(scope="module")
def gpu_table_on_cpu(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "gpu.json"
    r = bench("--tiny", "--sections", "gpu", "--device", "cpu", "--no-torchlens", "--json", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r, json.loads(out.read_text())


def test_the_gpu_table_has_a_row_per_model_of_the_cuda_measurements(gpu_table_on_cpu):
    _, res = gpu_table_on_cpu
    assert [r["model"] for r in res["gpu"]["rows"]] == [
        "GPT 4L d128 T64 b4 (tiny)", "ResNet-18 b32 (tiny)", "GPT 8L d512 T256 b8 (tiny)"]


def test_the_gpu_table_gives_each_variant_as_a_ratio_to_the_untraced_step(gpu_table_on_cpu):
    _, res = gpu_table_on_cpu
    for r in res["gpu"]["rows"]:
        assert sorted(r["ratios"]) == ["all", "no-op mode", "none", "profiler", "stats"]
        assert r["untraced_ms"] > 0 and all(x > 0 for x in r["ratios"].values())


def test_synchronising_calls_are_not_counted_on_cpu(gpu_table_on_cpu):
    r, res = gpu_table_on_cpu
    assert all(v is None for row in res["gpu"]["rows"] for v in row["syncs"].values())
    assert "syncs in a step" in r.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_table_counts_synchronising_calls(tmp_path):
    out = tmp_path / "gpu.json"
    r = bench("--device", "cuda", "--tiny", "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["gpu"]["rows"]
    assert all(isinstance(row["syncs"]["none"], int) for row in rows)
