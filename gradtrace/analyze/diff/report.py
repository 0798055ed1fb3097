"""The diff report as Markdown: the verdict, then one section per part of the report
(configuration, structure, numerics, first divergence, likely cause, data parallel,
float64 reference) (:func:`format_report_md`); and the replay report around one
diff per target (:func:`format_replay_md`)."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["format_replay_md", "format_report_md"]

_COMPARED = ("values", "stats", "rows", "shape")
_NOT_COMPARED = {"uninitialized": "uninitialized (torch.empty*)", "batch-split": "batch-split (no values kept)",
                 "rank-local": "rank-local", "none": "without values or statistics"}


def format_report_md(report: dict, title: str | None = None) -> str:
    """Return the diff report as Markdown, sections in order: configuration, structure,
    numerics, first divergence, likely cause, data parallel, float64 reference."""
    a, b = report.get("names", ["A", "B"])
    L = [f"## {title or f'{b} against {a}'}", "", _verdict_line(report, a, b), ""]
    L += _configuration_lines(report["config"], a, b)
    L += _structure_lines(report["structure"], a, b)
    L += _numerics_lines(report["numerics"])
    L += _first_divergence_lines(report, a, b)
    L += _cause_lines(report.get("explanation"))
    L += _data_parallel_lines(report.get("data_parallel"), a)
    L += _reference_lines(report.get("reference"))
    return "\n".join(L) + "\n"


def format_replay_md(rep: dict) -> str:
    """Return the replay report as Markdown: runs, verdicts and errors, then one diff
    per target."""
    L = [f"# gradtrace replay: {rep['script']} {' '.join(rep.get('argv') or [])}".rstrip(), ""]
    L.append(f"targets: {', '.join(rep['targets'])}; baseline: {rep['baseline']}; random numbers: "
             f"{rep['rng']['text']}; values kept: {rep['values']}.")
    L += ["", "| target | verdict | status | seconds | folder |", "| --- | --- | --- | --- | --- |"]
    for name, run in rep["runs"].items():
        verdict = "baseline" if name == rep["baseline"] and rep["verdicts"].get(name) != "failed" else \
            rep["verdicts"].get(name, "-")
        status = ", ".join(f"rank{r['rank']} {r['status']}" for r in run["ranks"]) if run["kind"] == "ddp" \
            else run["ranks"][0]["status"]
        L.append(f"| {name} | {verdict} | {status} | {run['seconds']} | {run['folder']} |")
    for name, run in rep["runs"].items():
        if run.get("placement"):
            L.append(f"\n{name}: {run['placement']['text']}.")
    for e in rep["errors"]:
        L.append(f"\n**error**: {e['text']}" + (" (timed out)" if e.get("timed_out") else "")
                 + (f"; traces kept: {', '.join(e['traces_kept'])}" if e.get("traces_kept") else ""))
    for name, c in rep["comparisons"].items():
        L += ["", format_report_md(c, title=f"{name} against {rep['baseline']}")]
    return "\n".join(L) + "\n"


def _configuration_lines(c, a, b) -> list:
    L = ["### 1. Configuration", "", f"| | {a} | {b} |", "| --- | --- | --- |"]
    for k, v in c["versions"].items():
        L.append(f"| {k} | {_fmt(v[0])} | {_fmt(v[1])} |")
    L.append(f"| target | {_fmt(c['target'][0])} | {_fmt(c['target'][1])} |")
    L.append(f"| rng | {_fmt(c['rng'][0])} | {_fmt(c['rng'][1])} |")
    L.append(f"| world size | {c['world_size'][0]} | {c['world_size'][1]} |")
    L.append(f"| batch shape (per rank) | {_fmt(c['batch_shapes']['A'])} | "
             f"{', '.join(_fmt(s) for s in c['batch_shapes']['B_ranks'])} |")
    if "autocast" in c:
        mark = " **differs**" if c.get("autocast_differs") else ""
        L.append(f"| autocast | {_autocast_text(c['autocast'][0])} | {_autocast_text(c['autocast'][1])}{mark} |")
    for k, v in c["math"].items():
        mark = " **differs**" if k in c["math_differs"] else ""
        L.append(f"| math.{k} | {_fmt(v[0])} | {_fmt(v[1])}{mark} |")
    for kind in ("parameter", "buffer"):
        cols = [_dtype_counts(c["parameters"], kind, i) for i in (0, 1)]
        if any(cols):
            mark = " **differs**" if cols[0] != cols[1] else ""
            L.append(f"| {kind} dtypes | {cols[0] or '-'} | {cols[1] or '-'}{mark} |")
    if c["dtypes_differ"]:
        L.append("\nDtypes differ for: " + ", ".join(
            f"{k} ({c['parameters'][k][0]} in {a}, {c['parameters'][k][1]} in {b})" for k in c["dtypes_differ"][:10])
            + (f", ... {len(c['dtypes_differ']) - 10} more" if len(c["dtypes_differ"]) > 10 else ""))
    for side, only in zip((a, b), c.get("parameters_only") or ([], [])):
        if only:
            L.append(f"\nParameters and buffers only in {side}: {', '.join(only[:10])}"
                     + (f", ... {len(only) - 10} more" if len(only) > 10 else ""))
    return L


def _structure_lines(s, a, b) -> list:
    L = ["", "### 2. Structure", "",
         f"ops: {s['ops'][0]} in {a}, {s['ops'][1]} in {b}; aligned {s['aligned_by_key']} by key "
         f"(module, op, occurrence) and {s['aligned_by_sequence']} by sequence; "
         f"{s['only_a_count']} only in {a}, {s['only_b_count']} only in {b}."]
    for side, lst, n in ((a, s["only_a"], s["only_a_count"]), (b, s["only_b"], s["only_b_count"])):
        if lst:
            L.append(f"\nOnly in {side}:")
            groups = _grouped(lst)
            for o, k in groups[:12]:
                L.append(" ".join(x for x in (f"- `{o['name']}` ({o['category']})", f"{k} times" if k > 1 else "",
                                              _in_module(o), _where(o),
                                              f"`{o['code']}`" if o.get("code") else "") if x))
            if n > len(lst) or len(groups) > 12:
                L.append(f"- ... {n - sum(k for _, k in groups[:12])} more")
    for side, cl in zip((a, b), s["collectives"]):
        if cl:
            L.append(f"\nAll-reduce buckets in {side}: " + "; ".join(
                f"{x['id']} bucket {x['bucket']} ({x['numel']} elements, {len(x['params'] or [])} params, "
                f"world size {x['world_size']})" for x in cl[:8]) + (" ..." if len(cl) > 8 else ""))
    for al in s["aliasing"]:
        o = al["op"]
        times = f" ({al['count']} times)" if al.get("count", 1) > 1 else ""
        L.append(f"\nAliasing differs{times}: `{o['name']}` at {_where(o)} `{o.get('code') or ''}` copied in "
                 f"{a if al['copy'][0] else b} and returned the same tensor in {b if al['copy'][0] else a}"
                 + (f"; it is written afterwards at {_where(al['written_after'])} "
                    f"`{al['written_after'].get('code') or ''}`: what the program computes depends on whether `.to()` copied"
                    if al["meaning_changes"] else ""))
    return L


def _numerics_lines(n) -> list:
    shown = sorted(n["by_basis"].items())
    how = [f"by {k} {v}" for k, v in shown if k in _COMPARED] + (
        [f"{n['grads_compared']} of them gradients"] if n["grads_compared"] else [])
    skipped = [f"{v} {_NOT_COMPARED.get(k, k)}" for k, v in shown if k not in _COMPARED]
    if n["compared"]:
        said = (f"compared {n['compared']} tensors ({', '.join(how)}): {n['agreeing']} agree, "
                f"{n['diverging']} diverge; largest absolute difference {_fmt(n['max_abs'])}"
                + (" (bit-identical)" if n["exact"] else "") + ".")
    else:
        said = "compared no tensors: no op output or gradient of one run was matched in the other."
    L = ["", "### 3. Numerics", "", said + (f" Not compared: {', '.join(skipped)}." if skipped else "")]
    if n["diverging_items"]:
        L += ["", "| what | op | where | tensor | basis | max abs | max rel | mismatched | rtol/atol |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for it in n["diverging_items"][:15]:
            o = it.get("op") or {}
            dtype = it.get("dtype") if it.get("dtype_a") in (None, it.get("dtype")) else \
                f"{it.get('dtype_a')}/{it.get('dtype')}"
            L.append(f"| {it['what']} | `{o.get('name', '')}` | {_where(o)} | {it.get('label') or it.get('a')} "
                     f"{it.get('shape')} {dtype} | {it['basis']} | {_fmt(it.get('max_abs'))} | "
                     f"{_fmt(it.get('max_rel'))} | {_fmt(it.get('mismatch'))} | {it['rtol']:.2g}/{it['atol']:.2g} |")
    return L


def _first_divergence_lines(report, a, b) -> list:
    f = report["first_divergence"]
    L = ["", "### First divergence", ""]
    if f is None:
        stopped = [name for name, f in zip((a, b), report.get("failures") or ()) if f]
        if not report["numerics"]["compared"]:
            L.append("none found: nothing was compared.")
        else:
            L.append("none: every compared tensor agrees within tolerance"
                     + (f", up to where {' and '.join(stopped)} raised." if stopped else "."))
        return L
    fig = f["figures"]
    L.append(f"{'forward' if f['what'] in ('output', 'write') else 'backward'} — `{f.get('name')}` "
             f"(op {f.get('seq')}) {_in_module(f) or 'at top level (in no module)'} at "
             f"{f.get('file')}:{f.get('line')}")
    L.append(f"\n    {f.get('code') or ''}\n")
    dtype = fig.get("dtype") if fig.get("dtype_a") in (None, fig.get("dtype")) else \
        f"{fig.get('dtype_a')} in {a}, {fig.get('dtype')} in {b}"
    L.append(f"{fig['what']} {fig.get('label') or fig.get('a')} {fig.get('shape')} {dtype}: "
             f"max abs {_fmt(fig.get('max_abs'))}, max rel {_fmt(fig.get('max_rel'))}, mismatched "
             f"{_fmt(fig.get('mismatch'))} (basis {fig['basis']}, rtol {fig['rtol']:.2g}, atol {fig['atol']:.2g})"
             + (f"; {fig['note']}" if fig.get("note") else ""))
    if f.get("autocast"):
        L.append("\n" + _autocast_divergence_text(f["autocast"], fig.get("autocast"), a, b))
    if f.get("inputs") is not None:
        agreed = f.get("inputs_agreed") or []
        L.append(f"\ninputs that still agreed: {', '.join(agreed) if agreed else 'none'}"
                 + (f"; inputs that did not: {', '.join(i['label'] for i in f['inputs'] if not i['agree'])}"
                    if any(not i["agree"] for i in f["inputs"]) else ""))
    return L


def _cause_lines(ex) -> list:
    if not (ex and ex.get("text")):
        return []
    L = ["", "### Likely cause", "", ex["text"]]
    if ex.get("tried"):
        L.append(f"\nre-run: {ex['tried']['target']} with {ex['tried']['switch_text']}, "
                 f"written to {ex['tried']['folder']}")
    return L


def _data_parallel_lines(dp, a) -> list:
    if not dp:
        return []
    L = ["", "### 4. Data parallel against one device", "",
         f"world size {dp['world_size']}; batch per rank {', '.join(_fmt(x) for x in dp['batch_shapes'])} "
         f"against {_fmt(dp['baseline_batch_shape'])}."]
    for ls in dp["losses"]:
        L.append(f"- loss (backward {ls['backward']}): {a} {_fmt(ls['baseline'])}; ranks "
                 f"{', '.join(_fmt(x) for x in ls['ranks'])} (mean {_fmt(ls['mean_of_ranks'])}, sum "
                 f"{_fmt(ls['sum_of_ranks'])})" + (f"; the baseline is the {ls['matches']} of the rank losses"
                                                  if ls.get("matches") else ""))
    g_ok = sum(1 for g in dp["gradients"] if g["agree"])
    L.append(f"- all-reduced parameter gradients: {g_ok} of {len(dp['gradients'])} agree with the "
             f"single-device full-batch gradients")
    bad = [g for g in dp["gradients"] if not g["agree"]]
    for g in bad[:8]:
        L.append(f"  - {g['param']} (backward {g['backward']}): max abs {_fmt(g['max_abs'])}, "
                 f"norm ratio {_fmt(g['norm_ratio'])}")
    if len(bad) > 8:
        L.append(f"  - ... {len(bad) - 8} more")
    if dp["constant_factor"]:
        L.append(f"- **{dp['constant_factor']['text']}**")
    if dp["batchnorm_not_synced"]:
        L.append(f"- BatchNorm without SyncBatchNorm (statistics per rank, not per batch): "
                 f"{', '.join(dp['batchnorm_not_synced'])}")
    if dp["no_grad_on_rank"]:
        L.append("- parameters with no gradient on some rank: " + ", ".join(
            f"{x['param']} (rank {x['rank']}, backward {x['backward']})" for x in dp["no_grad_on_rank"][:10]))
    for cl in dp["collectives"]:
        buckets = _buckets(cl["buckets"])
        L.append(f"- rank {cl['rank']}: {_plural(cl['count'], 'all-reduce call')} over "
                 f"{_plural(len(buckets), 'bucket')}: "
                 + "; ".join(f"bucket {x['bucket']} ({_plural(k, 'call')}): {x['numel']} elements "
                             f"({', '.join(x['params'] or [])})" for x, k in buckets[:4])
                 + (" ..." if len(buckets) > 4 else ""))
    for r in dp["other_ranks_rows"]:
        if r["rows_agree"] + r["rows_differ"]:
            L.append(f"- rank {r['rank']} outputs against the baseline's rows: {r['rows_agree']} agree, "
                     f"{r['rows_differ']} differ")
        else:
            L.append(f"- rank {r['rank']} outputs against the baseline's rows: not compared (they need "
                     f"full values: --values all)")
    return L


def _reference_lines(ref) -> list:
    if not ref:
        return []
    L = ["", "### 5. Against the float64 reference", "", ref["verdict"] + "."]
    if ref.get("worst"):
        w = ref["worst"]
        L.append(f"\nworst: {w['what']} {w.get('label') or w['ref']}: RMSE to {ref['reference']} "
                 f"{_fmt(w['rmse_target'])} ({ref['target']}) vs {_fmt(w['rmse_baseline'])} ({ref['baseline']}), "
                 f"basis {w['basis']}")
    return L


def _verdict_line(report, a, b) -> str:
    """The verdict: agrees, diverges, or which run failed, where, and (both) whether the same way."""
    verdict = report.get("verdict") or ("agrees" if report["agrees"] else "diverges")
    fails = [(name, f) for name, f in zip((a, b), report.get("failures") or (None, None)) if f]
    if verdict == "both failed":
        if report.get("failed_same_way"):
            return (f"**Verdict: both runs failed, the same way**: {_failure_text(fails[0][1])} in both. "
                    "The comparison below covers what ran before.")
        return ("**Verdict: both runs failed, differently**: " + "; ".join(
            f"{k}: {_failure_text(f)}" for k, f in fails) + ". The comparison below covers what ran before.")
    if verdict == "failed" and fails:
        (k, f), = fails
        other = b if f is (report["failures"] or [None, None])[0] else a
        return (f"**Verdict: {k} failed**: {_failure_text(f)}; {other} ran to the end. "
                f"The comparison below covers what both ran.")
    return f"**Verdict: {verdict}**"


def _failure_text(f) -> str:
    where = f" at {Path(f['file']).name}:{f['line']}" if f.get("file") else ""
    code = f" `{f['code']}`" if f.get("code") else ""
    msg = (f.get("message") or "").strip().splitlines()
    return f"{f.get('type')}: {msg[0] if msg else ''}{where}{code}"


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.3g}"
    return str(x)


def _where(d):
    if not d or not d.get("file"):
        return ""
    return f"{Path(d['file']).name}:{d.get('line')}"


def _dtype_counts(params: dict, kind: str, side: int) -> str:
    """One column of the parameter (or buffer) dtype row: ``float32 (4)``."""
    counts = {}
    for v in params.values():
        if v[2] == kind and v[side] is not None:
            counts[v[side]] = counts.get(v[side], 0) + 1
    return ", ".join(f"{dt} ({n})" for dt, n in sorted(counts.items()))


def _grouped(ops) -> list:
    """``[(op, count)]``: ops called from one line in one module, said once with a count."""
    out, at = [], {}
    for o in ops:
        key = (o.get("name"), o.get("category"), o.get("module"), o.get("file"), o.get("line"))
        if key in at:
            out[at[key]][1] += 1
        else:
            at[key] = len(out)
            out.append([o, 1])
    return [(o, k) for o, k in out]


def _buckets(calls) -> list:
    """``[(bucket, calls)]``: each bucket once (as first reduced), with how often it was
    all-reduced (once per step)."""
    out, at = [], {}
    for x in calls:
        if x.get("bucket") in at:
            out[at[x["bucket"]]][1] += 1
        else:
            at[x.get("bucket")] = len(out)
            out.append([x, 1])
    return [(x, k) for x, k in out]


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _in_module(o) -> str:
    """``in module `X` `` for an op that ran inside a module's forward, else ""."""
    m = (o or {}).get("module")
    return f"in module `{m}`" if m else ""


def _autocast_text(used) -> str:
    if not used:
        return "not used"
    return "; ".join(f"{u['device']} {u['dtype'] or '(dtype not recorded)'}"
                     + (f" ({_plural(u['ops'], 'op')})" if u.get("ops") else " (on at the trace's start or end)")
                     for u in used)


def _autocast_divergence_text(casts, lowered, a, b) -> str:
    """Where the first divergence sits relative to autocast regions."""
    parts = []
    for name, cast in zip((a, b), casts):
        if cast:
            parts.append(f"in {name} it ran inside an autocast region ("
                         + ", ".join(f"{dev} {dt}" for dev, dt in cast.items()) + ")")
        else:
            parts.append(f"in {name} outside any autocast region")
    text = "autocast: " + "; ".join(parts) + "."
    if lowered:
        side = a if lowered["side"] == "a" else b
        text += (f" Autocast gave {side}'s output {lowered['dtype']}; it is judged at the other run's "
                 f"{lowered['tolerance_of']} tolerance.")
    return text
