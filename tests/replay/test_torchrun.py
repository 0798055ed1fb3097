"""`gradtrace run` under torchrun (python -m torch.distributed.run): one folder per rank,
and the commands that read such a folder. One launch for the whole module."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import torchrun

from gradtrace.cli import main
from gradtrace.ranks import launcher_position, load_rank, load_ranks

DDP_SCRIPT = """\
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the launcher
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))[rank * 4:(rank + 1) * 4]
for step in range(2):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
print(f"rank {rank} done")
dist.destroy_process_group()
"""

PLAIN_SCRIPT = "import torch\nx = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()\n"
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Two ranks of a gloo DDP script, traced: ``(completed process, OUT)``."""
    tmp = tmp_path_factory.mktemp("torchrun")
    script = tmp / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    out = tmp / "out"
    return torchrun(tmp, script, "-o", out, timeout=120), out


@pytest.fixture(scope="module")
def out(launched):
    r, out = launched
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- the launched run ---------------------------------------------------------------------


def test_the_launched_run_exits_0(launched):
    r, _ = launched
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_each_rank_writes_its_own_folder_and_nothing_is_written_above_them(out):
    assert (out / "rank0" / "trace.json").is_file() and (out / "rank1" / "trace.json").is_file()
    assert not (out / "trace.json").exists()


def test_each_trace_records_its_rank_and_the_world_size(out):
    for k in (0, 1):
        g = json.loads((out / f"rank{k}" / "trace.json").read_text())["graph"]
        assert (g["rank"], g["world_size"]) == (k, 2)


def test_both_ranks_record_the_ddp_allreduce_of_each_step(out):
    for k, tr in load_ranks(out).items():
        G = tr.graph
        coll = [d for _, d in G.nodes(data=True) if d["kind"] == "collective"]
        assert len(coll) == 2  # one bucket per step
        assert all(d["op"] == "allreduce" and d["rank"] == k and d["world_size"] == 2 for d in coll)
        assert sorted(coll[0]["params"]) == ["bias", "weight"]
        assert any(d["kind"] == "reduces" for _, _, d in G.edges(data=True))


def test_rank_0_prints_the_report_and_rank_1_one_line(launched):
    r, out = launched
    assert "rank 0 done" in r.stdout and "rank 1 done" in r.stdout
    assert "— rank 0 of 2 — status ok" in r.stdout and "top source lines" in r.stdout
    assert r.stdout.count("top source lines") == 1
    line = [ln for ln in r.stdout.splitlines() if "rank 1 of 2" in ln]
    assert len(line) == 1 and "2 all-reduce buckets" in line[0] and f"gradtrace show {out} --rank 1" in line[0]


# -- reading the multi-rank folder ----------------------------------------------------------


def test_load_ranks_gives_every_rank_and_load_rank_one(out):
    assert sorted(load_ranks(out)) == [0, 1]
    assert list(load_ranks(out / "rank1")) == [1]
    assert load_rank(out, 1).meta["rank"] == 1


def test_show_lists_both_ranks(out):
    r = cli("show", out)
    assert r.exit_code == 0, r.output
    assert "ranks 0, 1 of world size 2" in r.output
    rows = [ln.split("│")[1:8] for ln in r.output.splitlines() if ln.startswith("│")]
    assert [(c[0].strip(), c[1].strip(), c[-1].strip()) for c in rows] == [("0", "ok", "rank0"), ("1", "ok", "rank1")]


def test_show_json_has_a_row_per_rank_with_its_collectives(out):
    rows = json.loads(cli("show", out, "--json").output)
    assert [(row["rank"], row["status"], row["collectives"]) for row in rows] == [(0, "ok", 2), (1, "ok", 2)]


def test_show_with_a_table_option_prints_it_for_each_rank(out):
    r = cli("show", out, "--backward", "--json")
    assert r.exit_code == 0 and sorted(json.loads(r.output)) == ["0", "1"]


def test_show_rank_1_shows_that_rank(out):
    r = cli("show", out, "--rank", "1", "--ops", "--json")
    assert r.exit_code == 0, r.output
    ops = json.loads(r.output)
    assert any(o["op"] == "torch.nn.functional.linear" for o in ops)


def test_show_of_a_rank_that_is_not_there_is_a_one_line_error(out):
    r = cli("show", out, "--rank", "5")
    assert r.exit_code == 2 and "no trace for rank 5 (it has ranks 0, 1)" in r.output
    assert r.output.strip().count("\n") == 0


def test_check_checks_every_rank(out):
    r = cli("check", out)
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1].startswith("ranks 0, 1: ")


def test_check_json_labels_findings_with_their_rank(out):
    r = cli("check", out, "--json")
    assert r.exit_code == 0 and all(f["rank"] in (0, 1) for f in json.loads(r.output))


def test_check_one_rank(out):
    assert cli("check", out, "--rank", "1").exit_code == 0


def test_diff_of_two_ranks_of_one_run_runs(out):
    r = cli("diff", out / "rank0", out / "rank1")
    assert r.exit_code in (0, 1), r.output
    assert "rank1 against rank0" in r.output
    assert "Data parallel" not in r.output  # rank 0 is no single-device baseline


def test_diff_of_two_multi_rank_folders_goes_rank_by_rank(out):
    r = cli("diff", out, out)
    assert r.exit_code == 0, r.output
    assert "rank0 against" in r.output and "rank1 against" in r.output
    assert "every rank agrees" in r.output


def test_diff_of_folders_with_different_ranks_is_a_one_line_error(out, tmp_path):
    import shutil

    shutil.copytree(out / "rank0", tmp_path / "rank0")
    r = cli("diff", out, tmp_path)
    assert r.exit_code == 2 and "has ranks 0, 1" in r.output and r.output.strip().count("\n") == 0


def test_dot_rank_0_writes_dot(out, tmp_path):
    r = cli("dot", out, "--rank", "0", "-o", tmp_path / "r0.dot")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r0.dot").read_text().startswith("digraph")


def test_dot_without_rank_draws_rank_0_and_says_so(out):
    r = CliRunner().invoke(main, ["dot", str(out)])
    assert r.exit_code == 0 and r.stdout.startswith("digraph")
    assert "drawing rank 0" in r.stderr


def test_a_folder_that_is_neither_a_trace_nor_rank_folders_is_a_one_line_error(tmp_path):
    (tmp_path / "rank0").mkdir()  # no trace in it
    r = cli("show", tmp_path)
    assert r.exit_code == 2 and "not a gradtrace trace" in r.output and r.output.strip().count("\n") == 0


# -- the launcher's environment, without launching -------------------------------------------


@pytest.fixture
def as_rank_1(monkeypatch):
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")


def test_launcher_position_reads_rank_and_world_size():
    assert launcher_position({}) is None
    assert launcher_position({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2)
    with pytest.raises(ValueError, match="rank must be in"):
        launcher_position({"RANK": "2", "WORLD_SIZE": "2"})


def test_run_script_takes_rank_and_world_size_from_the_launchers_environment(as_rank_1, tmp_path):
    from gradtrace.runner import run_script

    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    meta = run_script(tmp_path / "plain.py").trace.meta
    assert (meta["rank"], meta["world_size"]) == (1, 2)


def test_run_under_a_launcher_writes_out_rank_k(as_rank_1, tmp_path):
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    r = cli("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "plain.py")
    assert r.exit_code == 0, r.output
    g = json.loads((tmp_path / "out" / "rank1" / "trace.json").read_text())["graph"]
    assert (g["rank"], g["world_size"]) == (1, 2)
    assert "rank 1 of 2" in r.output and "top source lines" not in r.output


def test_run_under_a_launcher_defaults_to_gradtrace_out_stem_rank_k(as_rank_1, tmp_path, monkeypatch):
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    monkeypatch.chdir(tmp_path)
    assert cli("run", "--no-svg", "plain.py").exit_code == 0
    assert (tmp_path / "gradtrace-out" / "plain" / "rank1" / "trace.json").is_file()


def test_rank_0_removes_an_earlier_single_process_trace_that_would_hide_the_ranks(monkeypatch, tmp_path):
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    assert cli("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "plain.py").exit_code == 0
    assert (tmp_path / "out" / "trace.json").is_file()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "plain.py").exit_code == 0
    assert not (tmp_path / "out" / "trace.json").exists() and (tmp_path / "out" / "rank0" / "trace.json").is_file()


def test_a_nonsense_launcher_environment_is_a_one_line_error(monkeypatch, tmp_path):
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    monkeypatch.setenv("RANK", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = cli("run", "-o", tmp_path / "out", tmp_path / "plain.py")
    assert r.exit_code == 2 and "not integers" in r.output and not Path(tmp_path / "out").exists()
