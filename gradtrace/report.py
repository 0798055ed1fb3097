"""Terminal output of the CLI: the run report and the ``show`` tables (rich)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .check import check_graph
from .summary import edges_of, nodes_of, ops_in_order, summarize

_console = Console(highlight=False, soft_wrap=True)
_graphviz_note_said = False
SVG_MAX_LINES = 6000  # Graphviz lays out a few thousand elements in seconds, not tens of thousands


def _stats_text(s) -> str:
    if not s:
        return ""
    return f"norm={s['norm']:.4g} mean={s['mean']:.4g} [{s['min']:.4g}, {s['max']:.4g}]" + (
        f" nan={s['nan']}" if s.get("nan") else "") + (f" inf={s['inf']}" if s.get("inf") else "")


def write_run_outputs(trace, out: Path, depth: int, svg: bool = True) -> dict:
    """Save a finished trace into ``out`` with its graph.dot (and graph.svg when
    Graphviz is installed); return the paths written, by name."""
    global _graphviz_note_said
    from .dot import GraphvizMissing, have_graphviz, render, to_dot
    from .tracefile import save

    G = trace.graph
    written = {}
    text = to_dot(G, "forward", depth)
    save(G, out, trace.values, text)
    written["trace"] = out / "trace.json"
    written["dot"] = out / "graph.dot"
    if trace.values:
        written["values"] = out / "values.safetensors"
    if svg:
        if not have_graphviz():
            if not _graphviz_note_said:
                print("gradtrace: note: Graphviz's 'dot' is not installed, so graph.svg was not "
                      "rendered (apt-get install graphviz); graph.dot was written.", file=sys.stderr)
                _graphviz_note_said = True
        elif text.count("\n") > SVG_MAX_LINES:
            print(f"gradtrace: note: graph.svg not rendered: the drawing has {text.count(chr(10))} "
                  f"elements, too many to lay out quickly; try `gradtrace dot {out} --depth 1 -o g.svg`",
                  file=sys.stderr)
        else:
            try:
                (out / "graph.svg").write_bytes(render(text, "svg"))
                written["svg"] = out / "graph.svg"
            except (GraphvizMissing, RuntimeError, OSError) as e:
                print(f"gradtrace: note: graph.svg not rendered ({e})", file=sys.stderr)
            except Exception as e:  # e.g. a render timeout on a huge graph
                print(f"gradtrace: note: graph.svg not rendered ({type(e).__name__})", file=sys.stderr)
    return written


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


def print_run_report(trace, out: Path, console: Console | None = None, all_ranks: Path | None = None):
    """Print the summary of a traced run and where its files went, in one write (ranks
    started by one launcher share the terminal).

    ``all_ranks``: the folder of all the ranks when this run is one rank of a launched
    run; rank 0 prints the full report, naming its rank, and every other rank one line."""
    c = console or Console(stderr=False, highlight=False, soft_wrap=True)
    G = trace.graph
    pos = _rank_of(G) if all_ranks is not None else None
    with c.capture() as cap:
        if pos is not None and pos[0] != 0:
            _print_rank_line(c, G, out, all_ranks, pos)
        else:
            _print_report(c, G, out, pos)
            if pos is not None:
                c.print(f"each of the {pos[1]} ranks writes {all_ranks}/rank<k>: gradtrace show {all_ranks} "
                        f"lists them, gradtrace show {all_ranks} --rank N shows one")
    c.file.write(cap.get())
    c.file.flush()


def _print_rank_line(c, G, out, all_ranks, pos):
    s = summarize(G)
    nc = len(_collectives(G))
    c.print(f"[bold]gradtrace[/bold]: rank {pos[0]} of {pos[1]}: {G.graph.get('script') or 'trace'} — status "
            f"[bold]{s['status']}[/bold]; {s['ops']} ops, {len(s['backward'])} backward calls, "
            f"{nc} all-reduce bucket{'s' if nc != 1 else ''}; findings: {_findings_text(check_graph(G))}; "
            f"wrote {out} (gradtrace show {all_ranks} --rank {pos[0]})")


def _print_report(c, G, out, pos):
    s = summarize(G)
    status = s["status"]
    where = f" — rank {pos[0]} of {pos[1]}" if pos is not None else ""
    c.print(f"[bold]gradtrace[/bold]: {G.graph.get('script') or 'trace'}{where} — status [bold]{status}[/bold]")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    t.add_column("ops by category")
    t.add_column("count", justify="right")
    for k, v in s["categories"].items():
        t.add_row(k, str(v))
    c.print(t)
    c.print(f"tensors {s['tensors']} ({s['tensor_versions']} versions), storages {s['storages']}, "
            f"views {s['views']}, aliases {s['aliases']}, in-place writes {s['writes']}"
            f" ({s['hidden_writes']} invisible to autograd)")
    if s["moves"]:
        c.print("moves: " + ", ".join(f"{m['src']}→{m['dst']}" + ("" if m["copy"] else " (same tensor)")
                                       for m in s["moves"][:8]) + (" …" if len(s["moves"]) > 8 else ""))
    for b in s["backward"]:
        roots = "; ".join(f"{r['label'] or r['root']} w={r['w']}" for r in b["roots"])
        c.print(f"backward {b['id']} ({b['api']}): {roots}; {b['grads']} gradients recorded"
                + (f"; raised {b['error']}" if b["error"] else ""))
    if s["unknown"]:
        c.print(f"unknown: {s['unknown']} read{'s' if s['unknown'] != 1 else ''} the recorder could not make "
                f"({', '.join(s['unknown_reasons'])}); the program ran as untraced", markup=False)
    coll = _collectives(G)
    if coll:
        c.print(f"collectives: {len(coll)} all-reduce bucket{'s' if len(coll) != 1 else ''} "
                f"({sum(int(d.get('numel') or 0) for d in coll)} elements in all)")
    if s["top_lines"]:
        c.print("top source lines by op count:")
        for tl in s["top_lines"]:
            c.print(f"  {tl['ops']:5d}  {Path(tl['file']).name}:{tl['line']}  {tl['code'] or ''}")
    findings = check_graph(G)
    if findings:
        c.print(f"findings: {_findings_text(findings)} (gradtrace check {out})")
    else:
        c.print("findings: none")
    files = [out / "trace.json", out / "graph.dot"]
    if (out / "values.safetensors").exists():
        files.append(out / "values.safetensors")
    if (out / "graph.svg").exists():
        files.append(out / "graph.svg")
    c.print("wrote " + ", ".join(str(f) for f in files))


def rank_rows(traces: dict) -> list:
    """One row per rank of ``{rank: Trace}``: status, op, backward and all-reduce
    counts, findings, folder (what ``gradtrace show`` prints for a multi-rank folder)."""
    rows = []
    for k, t in traces.items():
        G = t.graph
        s = summarize(G)
        findings = check_graph(G)
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
    _console.print(f"[bold]{folder}[/bold]: ranks {', '.join(str(k) for k in traces)} of world size "
                   f"{'/'.join(str(w) for w in worlds)}" + (f" — {scripts[0]}" if len(scripts) == 1 else ""))
    t = Table(show_header=True, header_style="bold")
    for c in ("rank", "status", "ops", "backward calls", "all-reduce buckets", "findings", "folder"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(str(r["rank"]), str(r["status"]), str(r["ops"]), str(r["backward"]), str(r["collectives"]),
                  r["findings"], Path(r["folder"]).name)
    _console.print(t)
    if missing:
        _console.print(f"no trace for rank {', '.join(str(k) for k in missing)} (a rank that ended before "
                       "writing its folder?)")
    if len(worlds) > 1 or len(scripts) > 1 or any(
            r["trace_rank"] != r["rank"] or r["rank"] >= int(r["world_size"] or 1) for r in rows):
        _console.print("note: the rank folders disagree (world size, script, or the rank a trace records): "
                       "some are from another run")
    _console.print(f"one rank's tables: gradtrace show {folder} --rank N [--ops|--backward|...]")
    return rows


def _filter_ops(G, line=None, module=None):
    ops = ops_in_order(G)
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


def _tensor_text(G, n):
    d = G.nodes[n]
    if d.get("kind") == "numpy":
        return f"ndarray{d.get('shape')}"
    name = d.get("label") or f"t{d.get('tid')}"
    return f"{name}@v{d.get('version')} {tuple(d.get('shape') or ())}"


def show_table(G, what: str, line=None, module=None, as_json=False):
    """Print (or, with ``as_json``, return) the rows of one ``show`` table."""
    rows = []
    if what == "summary":
        s = summarize(G)
        if as_json:
            return s
        from .summary import summary_text

        _console.print(summary_text(G))
        return s
    if what == "ops":
        for n, d in _filter_ops(G, line, module):
            ins = [_tensor_text(G, u) for u, _, e in G.in_edges(n, data="kind") if e == "input"]
            outs = [_tensor_text(G, v) for _, v, e in G.out_edges(n, data="kind") if e == "output"]
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
        for u, v, e in edges_of(G, "moved_to"):
            op = next((G.nodes[o] for o, _, k in G.in_edges(v, data="kind") if k == "output"), {})
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
    t = Table(show_header=True, header_style="bold")
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if r.get(c) is None else (", ".join(r[c]) if isinstance(r[c], list) else str(r[c]))
                    for c in cols])
    _console.print(t)
    if not rows:
        _console.print("(no rows)")
    return rows
