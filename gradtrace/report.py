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


def print_run_report(trace, out: Path, console: Console | None = None):
    """Print the summary of a traced run and where its files went."""
    c = console or Console(stderr=False, highlight=False, soft_wrap=True)
    G = trace.graph
    s = summarize(G)
    status = s["status"]
    c.print(f"[bold]gradtrace[/bold]: {G.graph.get('script') or 'trace'} — status [bold]{status}[/bold]")
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
    if s["top_lines"]:
        c.print("top source lines by op count:")
        for tl in s["top_lines"]:
            c.print(f"  {tl['ops']:5d}  {Path(tl['file']).name}:{tl['line']}  {tl['code'] or ''}")
    findings = check_graph(G)
    if findings:
        by = {}
        for f in findings:
            by[f.severity] = by.get(f.severity, 0) + 1
        c.print("findings: " + ", ".join(f"{v} {k}" for k, v in sorted(by.items()))
                + f" (gradtrace check {out})")
    else:
        c.print("findings: none")
    files = [out / "trace.json", out / "graph.dot"]
    if (out / "values.safetensors").exists():
        files.append(out / "values.safetensors")
    if (out / "graph.svg").exists():
        files.append(out / "graph.svg")
    c.print("wrote " + ", ".join(str(f) for f in files))


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
