"""Terminal output of the ``gradtrace`` commands: the run report and the ``show``
tables (rich), and a fresh line after what a traced script printed."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..analyze.scaling import scaler_line
from ..analyze.series import (
    backward_runs,
    row_series_lines,
    run_roots,
    series_lines,
    update_series_lines,
)
from ..analyze.step_rows import first_step, step_rows
from ..analyze.summary import (
    MOVE_CATEGORIES,
    edges_of,
    format_summary,
    move_groups,
    move_op_attrs,
    nodes_of,
    ops_in_order,
    plain,
    summarize,
    values_kept_text,
)
from ..graph.io import DOT_FILE, TRACE_FILE, VALUES_FILE
from ..graph.names import name_of
from ..graph.query import op_inputs, op_outputs
from ..graph.steps import find_steps
from ..outputs import HTML_FILE, SVG_FILE, run_findings, run_rows, run_summary
from ..progress import phase
from .table import print_table

__all__ = ["PIPE_WIDTH", "make_console", "print_run_report", "rank_rows", "show_ranks", "show_steps", "show_summary", "show_table",
           "start_fresh_line"]

PIPE_WIDTH = 1_000_000  # off a terminal nothing wraps: a table is as wide as its widest row


def make_console(file=None) -> Console:
    """Return a console that prints text as given (no markup, emoji codes or
    highlighting), wrapping at the terminal's width on a terminal and nowhere else."""
    c = Console(file=file, markup=False, emoji=False, highlight=False, soft_wrap=True)
    if not c.is_terminal:
        c.width = PIPE_WIDTH
    return c


def start_fresh_line():
    """Make sure what gradtrace prints next starts a line of its own, whatever the
    script printed last; the script's streams are flushed, not replaced.

    On a terminal, a line of spaces as wide as the terminal followed by a carriage
    return moves a cursor that is not at a line's start to the next line, and leaves
    one that is where it was. A regular file gets a newline unless it ends in one."""
    terminals = set()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):  # closed, or not a real file
            continue
        try:
            if os.isatty(fd):
                tty = os.ttyname(fd)
                if tty not in terminals:
                    terminals.add(tty)
                    _terminal_fresh_line(fd)
            elif stream is sys.stdout and _file_needs_newline(fd):
                os.write(fd, b"\n")
        except (OSError, AttributeError):  # AttributeError: no os.ttyname or os.pread (Windows)
            pass


def _terminal_fresh_line(fd: int):
    cols = os.get_terminal_size(fd).columns
    if cols > 1:
        os.write(fd, b" " * cols + b"\r")


def _file_needs_newline(fd: int) -> bool:
    """True when ``fd`` is a regular file whose last byte before the write position is
    not a newline."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    if pos <= 0:
        return False
    try:
        last = os.pread(fd, 1, pos - 1)
    except OSError:  # opened write-only (a shell's `>`): read it through another handle
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            f.seek(pos - 1)
            last = f.read(1)
    return last not in (b"\n", b"")


def _bold(text) -> Text:
    return Text(str(text), style="bold")


def _line(*parts) -> Text:
    """One line of output: ``str`` parts as literal text, ``Text`` parts as they are."""
    return Text.assemble(*(p if isinstance(p, Text) else Text(str(p)) for p in parts))


def _stats_text(s) -> str:
    if not s:
        return ""
    return f"norm={s['norm']:.4g} mean={s['mean']:.4g} [{s['min']:.4g}, {s['max']:.4g}]" + (
        f" nan={s['nan']}" if s.get("nan") else "") + (f" inf={s['inf']}" if s.get("inf") else "")


def _findings_text(findings) -> str:
    by = {}
    for f in findings:
        by[f.severity] = by.get(f.severity, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(by.items())) if by else "none"


def _collectives(G) -> list:
    return [d for _, d in nodes_of(G, "collective")]


def _rank_of(G):
    """``(rank, world_size)`` of a trace that ran under a launcher, else None."""
    world = int(G.graph.get("world_size") or 1)
    rank = int(G.graph.get("rank") or 0)
    return (rank, world) if world > 1 or rank else None


def print_run_report(trace, out: Path, console: Console | None = None, all_ranks: Path | None = None,
                     written: dict | None = None):
    """Print the summary of a traced run and where its files went, in one write (ranks
    started by one launcher share the terminal).

    ``all_ranks``: the folder of all the ranks when this run is one rank of a launched
    run; rank 0 prints the full report, naming its rank, and every other rank one line.
    ``written``: what :func:`gradtrace.outputs.write_run_outputs` returned (else the files found in ``out``)."""
    c = console or make_console()
    G = trace.graph
    out = Path(out)
    pos = _rank_of(G) if all_ranks is not None else None
    s = run_summary(G)
    with phase("checking"):
        findings = run_findings(G)
    files = list((written or _files_in(out)).values())
    with c.capture() as cap:
        if pos is not None and pos[0] != 0:
            _print_rank_line(c, G, s, findings, out, all_ranks, pos)
        else:
            _print_report(c, G, s, findings, out, pos, files)
            if pos is not None:
                c.print(_line(f"each of the {pos[1]} ranks writes {all_ranks}/rank<k>: gradtrace show {all_ranks} "
                              f"lists them, gradtrace show {all_ranks} --rank N shows one"))
    c.file.write(cap.get())
    c.file.flush()


def _window_text(window, first, seen) -> str:
    """What a ``--steps A:B`` run recorded, in one line."""
    asked = f"--steps {window[0]}:{window[1] or ''}"
    if first is None:
        return f"{asked}: the run ended after {seen} step(s), before the window opened; nothing was recorded"
    last = min(window[1] - 1, seen + 1) if window[1] else seen + 1
    return f"{asked}: recorded steps {first} to {last} of the run's {seen} (a step ends at an optimizer step or " \
        "gradtrace.step())"


def _ring_text(last, first: int, dropped: int) -> str:
    """What a ``--last N`` run kept, in one line."""
    return f"--last {last}: kept steps {first} on in full; the {dropped} step{'s' if dropped != 1 else ''} " \
        "before left a row each (gradtrace show DIR --steps)"


def _files_in(out: Path) -> dict:
    names = {"trace": TRACE_FILE, "dot": DOT_FILE, "values": VALUES_FILE, "svg": SVG_FILE, "html": HTML_FILE}
    return {k: out / f for k, f in names.items() if (out / f).exists()}


def _paused_at(G) -> list:
    """The ``gradtrace.trace`` ops where a trace of the program's own paused this one."""
    return [d for _, d in G.nodes(data=True) if d.get("kind") == "op" and d.get("paused")]


def _print_rank_line(c, G, s, findings, out, all_ranks, pos):
    nc = len(_collectives(G))
    c.print(_line(_bold("gradtrace"), f": rank {pos[0]} of {pos[1]}: {plain(G.graph.get('script') or 'trace')} "
                  "— status ", _bold(s["status"]), f"; {s['ops']} ops, {len(s['backward'])} backward calls, "
                  f"{nc} all-reduce bucket{'s' if nc != 1 else ''}; findings: {_findings_text(findings)}; "
                  f"wrote {out} (gradtrace show {all_ranks} --rank {pos[0]})"))


def _print_report(c, G, s, findings, out, pos, files):
    where = f" — rank {pos[0]} of {pos[1]}" if pos is not None else ""
    interrupted, stopped = G.graph.get("interrupted"), G.graph.get("stopped_at")
    why = f" (interrupted by {plain(interrupted)})" if interrupted else (
        " (stopped at the end of the step with the first NaN/Inf: --stop-at nonfinite)" if stopped else "")
    c.print(_line(_bold("gradtrace"), f": {plain(G.graph.get('script') or 'trace')}{where} — status ",
                  _bold(s["status"]), why))
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    t.add_column("ops by category")
    t.add_column("count", justify="right")
    for k, v in s["categories"].items():
        t.add_row(Text(plain(k)), str(v))
    c.print(t)
    c.print(_line(f"tensors {s['tensors']} ({s['tensor_versions']} versions), storages {s['storages']}, "
                  f"views {s['views']}, aliases {s['aliases']}, in-place writes {s['writes']}"
                  f" ({s['hidden_writes']} invisible to autograd)"))
    if s["moves"]:
        c.print(_line("moves: " + ", ".join(move_groups(s["moves"], G.graph.get("script")))))
    for run in backward_runs(s["backward"]):
        b = run[0]
        if len(run) > 1:
            roots = "; ".join(f"{plain(name)} w={plain(w)}" for name, _, w in run_roots(run))
            c.print(_line(f"backward {b['id']} … {run[-1]['id']} ({b['api']}): {len(run)} calls on {roots}; "
                          f"{b['grads']} gradients each"))
            continue
        roots = "; ".join(f"{plain(r['label'] or r['root'])} w={plain(r['w'])}" for r in b["roots"])
        c.print(_line(f"backward {b['id']} ({b['api']}): {roots}; {b['grads']} gradients recorded"
                      + (f"; raised {plain(b['error'])}" if b["error"] else "")))
    earlier = G.graph.get("earlier_steps")
    for text in row_series_lines(run_rows(G)) if earlier else series_lines(s["backward"]):
        c.print(_line(text))
    for text in update_series_lines(run_rows(G)):
        c.print(_line(text))
    if earlier:
        c.print(_line(_ring_text(G.graph.get("last"), first_step(G), len(earlier))))
    if s.get("scaler"):
        c.print(_line(scaler_line(s["scaler"])))
    window = G.graph.get("steps_window")
    if isinstance(window, list) and len(window) == 2:
        first = G.graph.get("first_step")
        if isinstance(first, int) and earlier:  # the window's first step, before the ring dropped any
            first -= len(earlier)
        c.print(_line(_window_text(window, first, G.graph.get("steps_seen"))))
    kept = G.graph.get("values_kept")
    if isinstance(kept, dict):
        c.print(_line(values_kept_text(kept)))
    if s["unknown"]:
        c.print(_line(f"unknown: {s['unknown']} read{'s' if s['unknown'] != 1 else ''} the recorder could not "
                      f"make ({plain(', '.join(s['unknown_reasons']), 1000)}); the program ran as untraced"))
    paused = _paused_at(G) if s["categories"].get("other") else []
    if paused:
        places = ", ".join(f"{plain(Path(d.get('file') or '?').name)}:{d.get('line')}" for d in paused[:3])
        c.print(_line(f"paused where the program entered its own gradtrace.trace() ({places}"
                      f"{' …' if len(paused) > 3 else ''}): the ops run inside are in that trace, not in this one"))
    coll = _collectives(G)
    if coll:
        c.print(_line(f"collectives: {len(coll)} all-reduce bucket{'s' if len(coll) != 1 else ''} "
                      f"({sum(int(d.get('numel') or 0) for d in coll)} elements in all)"))
    if s["top_lines"]:
        c.print("top source lines by op count:")
        for tl in s["top_lines"]:
            c.print(_line(f"  {tl['ops']:5d}  {plain(Path(tl['file']).name)}:{tl['line']}  {plain(tl['code'])}"))
    if findings:
        c.print(_line(f"findings: {_findings_text(findings)} (gradtrace check {out})"))
    else:
        c.print("findings: none")
    c.print(_line("wrote " + ", ".join(str(f) for f in files)))


def rank_rows(traces: dict) -> list:
    """One row per rank of ``{rank: Trace}``: status, op, backward and all-reduce
    counts, findings, folder (what ``gradtrace show`` prints for a multi-rank folder)."""
    rows = []
    for k, t in traces.items():
        G = t.graph
        s = summarize(G)
        findings = run_findings(G)
        rows.append({"rank": k, "trace_rank": G.graph.get("rank"), "world_size": G.graph.get("world_size"),
                     "status": s["status"], "ops": s["ops"],
                     "backward": len(s["backward"]), "collectives": len(_collectives(G)),
                     "findings": _findings_text(findings),
                     "errors": sum(1 for f in findings if f.severity == "error"),
                     "script": G.graph.get("script"), "folder": str(getattr(t, "path", ""))})
    return rows


def show_ranks(traces: dict, folder, as_json=False, missing=()):
    """Print (or, with ``as_json``, return) the one-row-per-rank table of a multi-rank folder."""
    rows = rank_rows(traces)
    if as_json:
        return rows
    worlds = sorted({r["world_size"] for r in rows}, key=str)
    scripts = sorted({str(r["script"]) for r in rows})
    c = make_console()
    c.print(_line(_bold(plain(folder)), f": ranks {', '.join(str(k) for k in traces)} of world size "
                  f"{'/'.join(plain(w) for w in worlds)}" + (f" — {plain(scripts[0])}" if len(scripts) == 1 else "")))
    print_table(c, ("rank", "status", "ops", "backward calls", "all-reduce buckets", "findings", "folder"),
                [(r["rank"], r["status"], r["ops"], r["backward"], r["collectives"], r["findings"],
                  Path(r["folder"]).name) for r in rows])
    if missing:
        c.print(f"no trace for rank {', '.join(str(k) for k in missing)} (a rank that ended before "
                "writing its folder?)")
    if len(worlds) > 1 or len(scripts) > 1 or any(
            r["trace_rank"] != r["rank"] or r["rank"] >= int(r["world_size"] or 1) for r in rows):
        c.print("note: the rank folders disagree (world size, script, or the rank a trace records): "
                "some are from another run")
    c.print(_line(f"one rank's tables: gradtrace show {plain(folder)} --rank N [--ops|--backward|...]"))
    return rows


def _filter_ops(G, line=None, module=None, step=None):
    ops = ops_in_order(G)
    if step is not None:
        steps = find_steps(G, data=False)
        first = first_step(G, steps)
        if not first <= step < first + max(steps.count, 1):
            have = f"steps {first} to {first + steps.count - 1}" if first > 1 else f"{steps.count} step(s)"
            if G.graph.get("earlier_steps") and 1 <= step < first:
                raise ValueError(f"step {step} fell out of the --last {G.graph.get('last')} ring: only its row is "
                                 f"kept (--steps); the trace holds {have}")
            raise ValueError(f"step {step} is not in this trace: it has {have}")
        ops = [(n, d) for n, d in ops if steps.step_of.get(n) == step - first + 1]
    if line:
        if ":" not in line:
            raise ValueError(f"--line wants FILE:LINE, got {line!r}")
        fname, _, num = line.rpartition(":")
        try:
            num = int(num)
        except ValueError:
            raise ValueError(f"--line wants FILE:LINE with a line number, got {line!r}") from None
        ops = [(n, d) for n, d in ops if d.get("line") == num and d.get("file")
               and (d["file"] == fname or d["file"].endswith("/" + fname) or Path(d["file"]).name == fname)]
    if module:
        ops = [(n, d) for n, d in ops if d.get("module") and
               (d["module"] == module or d["module"].startswith(module + "."))]
    return ops


_READ_KINDS = ("tensor", "numpy")


def _tensor_text(G, n):
    d = G.nodes[n]
    if d.get("kind") == "numpy":
        return f"ndarray{d.get('shape')}"
    return f"{name_of(d, version=True)} {tuple(d.get('shape') or ())}"


def show_summary(s: dict, script=None, as_json=False) -> dict:
    """Print (unless ``as_json``) a :func:`summarize` dict of a trace of ``script``; return it."""
    if not as_json:
        make_console().print(Text(format_summary(s, script)))
    return s


_STEP_COLS = ("step", "ops", "backward", "loss", "grad norm", "largest gradient", "largest update/weight", "lr",
              "nan", "inf")
_OLD_CHANGE_COL = "largest change"  # a trace older than update ratios: the relative change of a norm


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def _step_cells(r: dict, scaled: bool, ratios: bool) -> list:
    """One row of ``show --steps``: the step's last loss, and who holds the largest figures
    (``scaled``: with the loss scale column; ``ratios``: update-to-weight ratios, else,
    in a trace older than those, relative changes of a norm)."""
    grad = r.get("max_grad")
    update = r.get("max_update") if ratios else r.get("max_change")
    losses = [v for v in r["losses"] if v is not None]
    cells = [r["step"], r["ops"], len(r["backward"]), _num(losses[-1]) if losses else "", _num(r["grad_norm"]),
             f"{plain(grad['tensor'])} {_num(grad['norm'])}" if grad else "",
             f"{plain(update['tensor'])} {_num(update['ratio'])}" if update else "",
             ", ".join(_num(v) for v in r.get("lr") or ())]
    if scaled:
        s = r.get("scaler")
        cells.append(f"{_num(s['scale'])}{' skipped' if s['skipped'] else ''}" if s else "")
    return cells + [r["nan"], r["inf"]]


def show_steps(rows: list, as_json=False) -> list:
    """Print (unless ``as_json``) the step rows of a trace (``gradtrace show --steps``); return them."""
    if as_json:
        return rows
    c = make_console()
    if not rows:
        c.print("no steps: the trace has no backward call (its summary describes the whole program)")
        return rows
    scaled = any(r.get("scaler") for r in rows)
    ratios = any(r.get("max_update") for r in rows)
    cols = _STEP_COLS if ratios else tuple(_OLD_CHANGE_COL if k == _STEP_COLS[6] else k for k in _STEP_COLS)
    cols = cols[:-2] + ("loss scale",) + cols[-2:] if scaled else cols
    print_table(c, cols, (_step_cells(r, scaled, ratios) for r in rows))
    c.print("loss: the step's last backward root with one element; grad norm: of every .grad after the "
            "step's last backward call; "
            + ("largest update/weight: |w' - w| / |w| of the parameter its update changed most"
               if ratios else "largest change: |norm after - norm before| / norm before of a parameter the "
               "step wrote")
            + "; lr: each param group's learning rate at the step's optimizer step"
            + ("; loss scale: the GradScaler's scale in the step (skipped: it found NaN/Inf in the gradients "
               "and skipped the update)" if scaled else ""))
    return rows


def show_table(G, what: str, line=None, module=None, as_json=False, step=None):
    """Print (or, with ``as_json``, return) the rows of one ``show`` table; ``step``: only
    the ops of that step (``--ops --step N``)."""
    rows = []
    if what == "summary":
        return show_summary(summarize(G), G.graph.get("script"), as_json)
    if what == "steps":
        return show_steps(step_rows(G), as_json)
    if what == "ops":
        for n, d in _filter_ops(G, line, module, step):
            ins = [_tensor_text(G, u) for u in op_inputs(G, n, _READ_KINDS)]
            outs = [_tensor_text(G, v) for v in op_outputs(G, n, _READ_KINDS)]
            rows.append({"seq": d["seq"], "op": d["name"], "category": d["category"],
                         "inputs": ins, "outputs": outs, "module": d.get("module"),
                         "grad": d.get("grad_enabled"), "file": d.get("file"), "line": d.get("line"),
                         "code": d.get("code"), "args": d.get("args"), "error": d.get("error")})
        cols = ["seq", "op", "category", "inputs", "outputs", "module", "line", "code"]
    elif what == "backward":
        for bw, d in sorted(nodes_of(G, "backward"), key=lambda x: x[1]["seq"]):
            for _, v, e in G.out_edges(bw, data=True):
                k = e.get("kind")
                if k not in ("weights", "grad", "leaf_grad"):
                    continue
                extra = ""
                if k == "weights":
                    w = e.get("gradient")
                    extra = "implicit" if (w is None and d.get("implicit")) else (
                        _tensor_text(G, w) if w else repr(e.get("gradient_value")))
                    st = (e.get("received") or {}).get("stats")
                elif k == "leaf_grad":
                    extra = "accumulated onto earlier .grad" if e.get("accumulated") else ""
                    st = e.get("stats")
                else:
                    st = e.get("stats")
                rows.append({"backward": bw, "api": d["api"], "edge": k, "tensor": _tensor_text(G, v),
                             "node": v, "w": extra, "stats": st, "text": _stats_text(st)})
        cols = ["backward", "api", "edge", "tensor", "w", "text"]
    elif what == "aliases":
        for u, v, e in G.edges(data=True):
            k = e.get("kind")
            if k == "view_of":
                rows.append({"what": e.get("alias") or "view", "tensor": _tensor_text(G, u), "of": _tensor_text(G, v),
                             "op": "", "line": ""})
            elif k == "shares_memory":
                rows.append({"what": "numpy shares memory", "tensor": _tensor_text(G, v), "of": _tensor_text(G, u),
                             "op": "", "line": ""})
            elif k == "next_version" and not e.get("metadata_only"):
                op = G.nodes.get(e.get("op") or "", {})
                rows.append({"what": "write" if e.get("visible", True) else "write invisible to autograd",
                             "tensor": _tensor_text(G, v), "of": _tensor_text(G, u),
                             "op": op.get("name", "external (numpy)"), "line": op.get("line", "")})
        cols = ["what", "tensor", "of", "op", "line"]
    elif what == "moves":
        moved = list(edges_of(G, "moved_to"))
        move_ops = [(n, d) for n, d in ops_in_order(G) if d.get("category") in MOVE_CATEGORIES]
        for (u, v, e), op in zip(moved, move_op_attrs(G, move_ops, moved)):
            rows.append({"from": _tensor_text(G, u), "to": _tensor_text(G, v),
                         "device": f"{e['src_device']} → {e['dst_device']}",
                         "dtype": f"{e['src_dtype']} → {e['dst_dtype']}", "copy": e["copy"],
                         "line": op.get("line"), "code": op.get("code")})
        cols = ["from", "to", "device", "dtype", "copy", "line", "code"]
    elif what == "modules":
        counts = {}
        for _, d in ops_in_order(G):
            m = d.get("module")
            while m:
                counts[m] = counts.get(m, 0) + 1
                m = m.rsplit(".", 1)[0] if "." in m else None
        for n, d in nodes_of(G, "module"):
            if module and not (d["path"] == module or d["path"].startswith(module + ".")):
                continue
            rows.append({"module": d["path"], "type": d["type"], "ops": counts.get(d["path"], 0)})
        cols = ["module", "type", "ops"]
    else:
        raise ValueError(f"unknown table {what!r}")
    if as_json:
        return rows
    c = make_console()
    print_table(c, cols, ([r.get(col) for col in cols] for r in rows))
    if not rows:
        c.print("(no rows)")
    return rows
