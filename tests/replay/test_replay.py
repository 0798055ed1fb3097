"""`gradtrace replay`: real replays of programs on CPU, a float64 reference and
data-parallel ranks over gloo, each target in its own process."""

import json
import time

import pytest
import torch
from click.testing import CliRunner
from helpers import TESTS

from gradtrace.cli import main
from gradtrace.replay import DeviceMap, TargetError, parse_target, parse_targets

ROOT = TESTS.parent
EXAMPLES = ROOT / "examples"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def replay(out, *args):
    r = CliRunner().invoke(main, ["replay", "-o", str(out), *args])
    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return r, rep


@pytest.fixture(scope="module")
def mlp_ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp_ddp")
    return (out, *replay(out, "--on", "cpu", "--on", "ddp:2", "--values", "all",
                         str(EXAMPLES / "data_parallel.py"), "--steps", "2"))


def test_mlp_step_on_cpu_and_two_ranks_agrees_and_shows_the_allreduce_buckets(mlp_ddp):
    out, r, rep = mlp_ddp
    assert r.exit_code == 0, r.output
    assert rep["verdicts"] == {"ddp:2": "agrees"}
    for k in (0, 1):
        assert (out / "ddp:2" / f"rank{k}" / "trace.json").exists()
    assert (out / "cpu" / "trace.json").exists() and (out / "report.md").exists()
    dp = rep["comparisons"]["ddp:2"]["data_parallel"]
    assert dp["world_size"] == 2 and dp["batch_shapes"] == [[8, 8], [8, 8]]
    assert dp["gradients_agree"] and len(dp["gradients"]) == 8  # 4 parameters x 2 steps
    buckets = dp["collectives"][0]["buckets"]
    assert len(buckets) == 2 and sorted(buckets[0]["params"]) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert buckets[0]["numel"] == 8 * 16 + 16 + 16 + 1
    assert all(ls["matches"] == "mean" for ls in dp["losses"])
    assert "All-reduce buckets in ddp:2" in r.output


def test_the_ddp_report_names_no_dtype_difference_when_only_ddps_parameter_names_differ(mlp_ddp):
    _, r, rep = mlp_ddp
    assert "Dtypes differ" not in r.output
    params = rep["comparisons"]["ddp:2"]["config"]["parameters"]
    assert sorted(params) == ["MLP.fc1.bias", "MLP.fc1.weight", "MLP.fc2.bias", "MLP.fc2.weight"]


def test_one_bucket_reduced_in_two_steps_is_one_bucket_of_two_calls(mlp_ddp):
    _, r, _ = mlp_ddp
    assert "- rank 0: 2 all-reduce calls over 1 bucket: bucket 0 (2 calls): 161 elements" in r.output


def test_the_rank_traces_hold_collective_nodes_with_reduces_edges(mlp_ddp):
    from gradtrace import load

    out, _, _ = mlp_ddp
    G = load(out / "ddp:2" / "rank1").graph
    colls = [(n, d) for n, d in G.nodes(data=True) if d["kind"] == "collective"]
    assert [d["op"] for _, d in colls] == ["allreduce", "allreduce"]
    assert all(d["world_size"] == 2 and d["rank"] == 1 for _, d in colls)
    reduces = [(u, v) for u, v, e in G.edges(data=True) if e["kind"] == "reduces"]
    assert len(reduces) == 8 and all(G.nodes[v]["kind"] == "tensor" for _, v in reduces)
    assert G.graph["rank"] == 1 and G.graph["world_size"] == 2 and G.graph["target"] == "ddp:2"


def test_sum_reduction_diverges_and_the_report_names_the_world_size_factor(tmp_path):
    r, rep = replay(tmp_path, "--on", "cpu", "--on", "ddp:2", str(EXAMPLES / "data_parallel.py"),
                    "--steps", "1", "--reduction", "sum")
    assert r.exit_code == 1, r.output
    dp = rep["comparisons"]["ddp:2"]["data_parallel"]
    assert dp["constant_factor"]["near_world_size"]
    assert dp["constant_factor"]["factor"] == pytest.approx(2.0, rel=1e-3)
    assert dp["losses"][0]["matches"] == "sum"
    assert "a factor near the world size (2)" in r.output


def test_batchnorm_without_sync_diverges_at_the_batch_norm(tmp_path):
    r, rep = replay(tmp_path, "--on", "cpu", "--on", "ddp:2", "--values", "all",
                    str(EXAMPLES / "data_parallel.py"), "--steps", "1", "--batchnorm")
    assert r.exit_code == 1, r.output
    c = rep["comparisons"]["ddp:2"]
    first = c["first_divergence"]
    assert first["name"] == "torch.nn.functional.batch_norm" and first["module"] == "MLP.norm"
    assert first["figures"]["basis"] == "rows"  # rank 0's rows of the batch against the baseline's
    assert c["data_parallel"]["batchnorm_not_synced"] == ["MLP.norm (BatchNorm1d)"]


RAISING = '''import os
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank = dist.get_rank()
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
x = torch.ones(2, 4)
if rank == 1:
    raise RuntimeError("rank 1 gives up")
model(x).sum().backward()
'''


def test_a_rank_that_raises_ends_the_replay_naming_rank_1_and_its_line_and_keeps_rank_0s_trace(tmp_path):
    script = tmp_path / "raising.py"
    script.write_text(RAISING)
    t0 = time.time()
    r, rep = replay(tmp_path / "out", "--on", "ddp:2", "--timeout", "60", str(script))
    assert time.time() - t0 < 50  # no hang
    assert r.exit_code == 1
    (err,) = rep["errors"]
    assert err["rank"] == 1 and err["error"]["line"] == 11
    assert "ddp:2 rank 1 raised RuntimeError: rank 1 gives up at" in err["text"]
    assert "raise RuntimeError" in err["text"] and "rank 1 raised" in r.output
    assert (tmp_path / "out" / "ddp:2" / "rank0" / "trace.json").exists()


@pytest.fixture(scope="module")
def raising_twice(tmp_path_factory):
    out = tmp_path_factory.mktemp("raising_twice")
    script = out / "raises.py"
    script.write_text("import torch\nx = torch.ones(3, requires_grad=True)\n(x * 2).sum().backward()\n"
                      "raise ValueError('bad data')\n")
    return replay(out / "out", "--on", "cpu", "--on", "cpu", str(script))


def test_a_script_that_raises_on_both_targets_is_never_agrees(raising_twice):
    r, rep = raising_twice
    assert rep["verdicts"]["cpu-2"] == "both failed, the same way"
    assert "agrees" not in r.output.split("## cpu-2 against cpu")[0]


def test_each_failed_target_is_named_in_its_error_even_two_of_one_kind(raising_twice):
    _, rep = raising_twice
    assert [e["text"].split(" raised")[0] for e in rep["errors"]] == ["cpu", "cpu-2"]


@pytest.mark.parametrize("example", ["tensors.py", "autograd.py"])
def test_course_examples_replayed_on_cpu_against_cpu_agree_exactly(tmp_path, example):
    r, rep = replay(tmp_path, "--on", "cpu", "--on", "cpu", str(EXAMPLES / example))
    assert r.exit_code == 0, r.output
    n = rep["comparisons"]["cpu-2"]["numerics"]
    assert n["diverging"] == 0 and n["exact"] and n["compared"] > 10
    assert rep["rng"]["mode"] == "seeded" and "seeded" in r.output


def test_a_float64_reference_judges_a_run_as_accurate_as_the_baseline(tmp_path):
    r, rep = replay(tmp_path, "--on", "cpu", "--on", "cpu64", "--on", "cpu", "--values", "all",
                    str(EXAMPLES / "train_mlp.py"), "--steps", "1", "--batch", "8")
    ref = rep["comparisons"]["cpu-2"]["reference"]
    assert ref["as_accurate"] and ref["checked"] > 5 and ref["basis"] == ["values"]
    assert "the cpu-2 run is as accurate as the cpu run" in r.output
    G64 = json.loads((tmp_path / "cpu64" / "trace.json").read_text())
    assert G64["graph"]["math"]["default_dtype"] == "float64"
    dts = rep["comparisons"]["cpu64"]["config"]["parameters"]
    assert dts and all(v[:2] == ["float32", "float64"] for v in dts.values())


def test_device_requests_map_to_a_cpu_target_and_random_draws_match_in_float64():
    with DeviceMap(parse_target("cpu")):
        x = torch.ones(2, device="cuda")
        y = torch.zeros(2).to("cuda")
        z = torch.zeros(2).cuda()
    assert (x.device.type, y.device.type, z.device.type) == ("cpu", "cpu", "cpu")
    torch.manual_seed(3)
    f32 = torch.randn(5)
    torch.manual_seed(3)
    with DeviceMap(parse_target("cpu64")):
        f64 = torch.randn(5, dtype=torch.float64)
        asked32 = torch.ones(2, dtype=torch.float32)
    assert f64.dtype == torch.float64 and torch.equal(f64, f32.double())  # float32's draws, widened
    assert asked32.dtype == torch.float64


def test_unknown_and_unavailable_targets_are_usage_errors(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'tpu'"):
        parse_targets(["cpu", "tpu"])
    assert [t.folder for t in parse_targets(["cpu", "cpu", "ddp:2"])] == ["cpu", "cpu-2", "ddp:2"]
    r = CliRunner().invoke(main, ["replay", "-o", str(tmp_path), "--on", "tpu", str(EXAMPLES / "tensors.py")])
    assert r.exit_code == 2 and "unknown target 'tpu'" in r.output
    if not torch.cuda.is_available():
        r = CliRunner().invoke(main, ["replay", "-o", str(tmp_path), "--on", "cpu", "--on", "cuda",
                                      str(EXAMPLES / "tensors.py")])
        assert r.exit_code == 2
        assert "target cuda needs a CUDA GPU" in r.output and len(r.output.strip().splitlines()) == 1


@needs_cuda
def test_mlp_on_cpu_and_cuda_sees_the_same_random_numbers(tmp_path):
    r, rep = replay(tmp_path, "--on", "cpu", "--on", "cuda", "--values", "all",
                    str(EXAMPLES / "train_mlp.py"), "--steps", "2")
    c = rep["comparisons"]["cuda"]
    assert c["config"]["target"] == ["cpu", "cuda"]
    drop = [it for it in c["numerics"]["diverging_items"] if "dropout" in (it.get("op") or {}).get("name", "")]
    assert not drop  # the dropout masks are the CPU generator's on both targets


@needs_cuda
def test_numpy_of_a_cuda_tensor_is_a_finding_that_names_the_line(tmp_path):
    script = tmp_path / "np.py"
    script.write_text("import torch\nx = torch.ones(3, device='cuda')\na = x.numpy()\n")
    r, rep = replay(tmp_path / "out", "--on", "cpu", "--on", "cuda", str(script))
    assert r.exit_code == 1 and rep["verdicts"]["cuda"] == "failed"
    assert rep["errors"][0]["error"]["line"] == 3


_CHECKSUM = '''import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 32))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
x = torch.randn(64, 32)
for _ in range(3):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
checksum = sum(p.detach().double().sum() for p in model.parameters())  # float32 values summed in float64
print(f"checksum {checksum.item():.6f}")
'''


def test_a_float64_sum_of_float32_values_is_judged_at_float32s_tolerance_against_cpu64(tmp_path):
    script = tmp_path / "checksum.py"
    script.write_text(_CHECKSUM)
    r, rep = replay(tmp_path / "out", "--on", "cpu", "--on", "cpu64", "--values", "all", str(script))
    n = rep["comparisons"]["cpu64"]["numerics"]
    assert r.exit_code == 0 and n["compared"] > 100
    assert n["diverging"] == 0, n["diverging_items"]
