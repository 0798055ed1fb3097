"""Run the real-program corpus untraced and under gradtrace, and print one block
per program: times, exit codes, whether stdout/stderr match, the findings of
``gradtrace check`` and the size of the default picture.

    python tests/real_programs/survey.py                 # all programs, a temporary folder
    python tests/real_programs/survey.py vae nanogpt     # some of them
    python tests/real_programs/survey.py --out runs/rp   # keep the traces in runs/rp/NAME

Standard library + pydot only. Uses ``.venv/bin/python`` and ``.venv/bin/gradtrace``
of the checkout when they exist, else this interpreter and ``gradtrace`` on PATH.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
GRADTRACE = str(VENV_BIN / "gradtrace") if (VENV_BIN / "gradtrace").exists() else "gradtrace"

PROGRAMS = [
    "mnist_cnn", "vae", "dcgan_spectral", "word_lm_lstm", "word_lm_transformer", "siamese_resnet",
    "lbfgs_time_sequence", "regression", "mnist_rnn", "forward_forward", "actor_critic", "nanogpt",
    "hf_bert_mlm", "hf_gpt2_checkpointing", "hf_t5_adafactor", "vit_mixup_ema", "per_sample_grads",
]

# the report `gradtrace run` prints on stdout after the script's own output
REPORT_START = re.compile(r"^gradtrace: .* — status ")
# pydot lists default-attribute statements as nodes with these names
NOT_NODES = {"node", "edge", "graph"}


def run(cmd, timeout):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return "timeout", out, err + f"\n[survey] killed after {timeout} s", time.perf_counter() - t0


def split_report(stdout):
    """(the script's own stdout, gradtrace's report) of a traced run."""
    lines = stdout.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if REPORT_START.match(line):
            return "".join(lines[:i]), "".join(lines[i:])
    return stdout, ""


def compare(a, b):
    """'identical' or where texts a (untraced) and b (traced) first differ."""
    if a == b:
        return "identical"
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else "<no line>"
        y = lb[i] if i < len(lb) else "<no line>"
        if x != y:
            return f"DIFFER at line {i + 1}: untraced {x!r} / traced {y!r}"
    return "DIFFER (line endings only)"


def indent(text, prefix="    "):
    return "".join(prefix + line + "\n" for line in text.rstrip("\n").splitlines()) or prefix + "(nothing)\n"


def all_nodes(graph):
    yield from graph.get_nodes()
    for sub in graph.get_subgraphs():
        yield from all_nodes(sub)


def picture_size(dot_file):
    """(op/module boxes, tensor nodes, title lines) of a DOT file written by
    ``gradtrace dot``. gradtrace/views/picture.py names its drawn nodes n0, n1, ...;
    tensors are ellipses, the legend is a plaintext node named "legend" and the
    title is the graph's label, not a node."""
    graphs = pydot.graph_from_dot_file(str(dot_file))
    g = graphs[0]
    boxes = tensors = 0
    for n in all_nodes(g):
        name = n.get_name().strip('"')
        if name in NOT_NODES or name == "legend":
            continue
        shape = (n.get("shape") or "").strip('"')
        if shape == "ellipse":
            tensors += 1
        else:
            boxes += 1
    label = (g.get("label") or "").strip()
    if label.startswith('"') and label.endswith('"'):
        label = label[1:-1]
    title = [t.replace('\\"', '"') for t in re.split(r"\\[nlr]", label) if t]
    return boxes, tensors, title


def svg_size(dot_file, timeout):
    if not shutil.which("dot"):
        return "Graphviz dot not installed"
    t0 = time.perf_counter()
    try:
        p = subprocess.run(["dot", "-Tsvg", str(dot_file)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"dot -Tsvg did not finish in {timeout} s"
    took = time.perf_counter() - t0
    if p.returncode != 0:
        return f"dot -Tsvg failed (exit {p.returncode}): {p.stderr.strip()[:300]}"
    m = re.search(r'<svg[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', p.stdout)
    if not m:
        return "no size in the SVG"
    return f"{float(m.group(1)):.0f} x {float(m.group(2)):.0f} pt (dot -Tsvg took {took:.1f} s)"


def survey(name, out, timeout):
    script = HERE / f"{name}.py"
    rel = script.relative_to(ROOT)
    trace_dir = out / name
    print(f"== {name} ({rel}) ==")

    rc_u, out_u, err_u, t_u = run([PYTHON, str(rel)], timeout)
    rc_t, out_t, err_t, t_t = run([GRADTRACE, "run", "-o", str(trace_dir), str(rel)], timeout)
    prog_out_t, report = split_report(out_t)
    status = next((ln for ln in report.splitlines() if REPORT_START.match(ln)), "(no gradtrace report on stdout)")

    print(f"untraced: {t_u:6.2f} s  exit {rc_u}")
    print(f"traced:   {t_t:6.2f} s  exit {rc_t}  [{status}]")
    print(f"stdout:   {compare(out_u, prog_out_t)}")
    print(f"stderr:   {compare(err_u, err_t)}")
    if rc_u != 0 or err_u:
        print("  untraced stderr (last lines):")
        print(indent("\n".join(err_u.splitlines()[-15:])), end="")
    if rc_t != 0 or err_t != err_u:
        print("  traced stderr (last lines):")
        print(indent("\n".join(err_t.splitlines()[-25:])), end="")
    if not (trace_dir / "trace.json").exists():
        print("no trace written: check and dot skipped\n")
        return

    rc_c, out_c, err_c, t_c = run([GRADTRACE, "check", str(trace_dir)], timeout)
    print(f"check:    exit {rc_c} ({t_c:.1f} s)")
    print(indent(out_c + (err_c and "[stderr]\n" + err_c)), end="")

    dot_file = out / f"{name}.dot"
    rc_d, out_d, err_d, t_d = run([GRADTRACE, "dot", str(trace_dir), "-o", str(dot_file), "--format", "dot"],
                                  timeout)
    if rc_d != 0 or not dot_file.exists():
        print(f"dot:      exit {rc_d} ({t_d:.1f} s), no DOT file")
        print(indent(out_d + err_d), end="")
        print()
        return
    if err_d.strip():
        print(f"dot stderr: {err_d.strip()}")
    try:
        boxes, tensors, title = picture_size(dot_file)
    except Exception as e:  # a DOT file pydot cannot read is itself a finding
        print(f"picture:  pydot could not read {dot_file}: {type(e).__name__}: {e}\n")
        return
    print(f"picture:  {boxes} op/module boxes, {tensors} tensor (input/output) nodes ({t_d:.1f} s)")
    for line in title:
        print(f"  title:  {line}")
    print(f"  svg:    {svg_size(dot_file, timeout)}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="programs to survey (default: all)")
    ap.add_argument("--out", type=Path, help="folder to keep the traces in (default: a temporary one, removed)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per command (default 900)")
    args = ap.parse_args()
    names = [n[:-3] if n.endswith(".py") else n for n in args.names] or PROGRAMS
    unknown = [n for n in names if not (HERE / f"{n}.py").exists() or n == "survey"]
    if unknown:
        ap.error(f"no such program: {', '.join(unknown)}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out.resolve()
        tmp = None
    else:
        tmp = tempfile.mkdtemp(prefix="real_programs-")
        out = Path(tmp)
    try:
        print(f"python: {PYTHON}\ngradtrace: {GRADTRACE}\ntraces: {out}\n")
        for name in names:
            survey(name, out, args.timeout)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
