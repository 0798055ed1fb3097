"""``gradtrace show DIR --costs``: FLOPs, parameters and memory saved for backward, by
module and by source line (:mod:`gradtrace.analyze.costs`)."""

from __future__ import annotations

import os

from ..analyze.costs import by_line, by_module, costs, flop_text, totals
from ..analyze.summary import human_bytes, plain
from .report import make_console
from .table import print_table

__all__ = ["show_costs"]


def _flop_cell(r: dict) -> str:
    known = flop_text(r["flops"]) if r["flops"] else ""
    return known + (f" (+{r['flops_unknown']} unknown)" if r["flops_unknown"] else "")


def _time_cell(r: dict) -> str:
    text = _ms(r["time_ns"])
    return text + (f" (GPU {_ms(r['device_time_ns'])})" if "device_time_ns" in r else "")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3g} ms"


def _saved_cell(r: dict, kind: str) -> str:
    n = r["saved"][kind]
    return (human_bytes(n) if n else "") + (f" (+{r['saved_unknown']} unread)" if kind == "activation"
                                           and r["saved_unknown"] else "")


def _headline(G, c, total: dict, step) -> list:
    where = ""
    if c.peak:
        d = G._node[c.peak["op"]]
        place = f"{os.path.basename(d['file'])}:{d['line']}" if d.get("file") else d["name"]
        where = (f"; peak of activations held for backward {human_bytes(c.peak['bytes'])} at step "
                 f"{c.peak['step']}, {d.get('module') or 'outside modules'} ({place})")
    s = total["saved"]
    lines = [
        f"costs of {'step ' + str(step) if step else 'the whole trace'}: "
        f"{flop_text(total['flops'])} known over the recorded (forward) ops, "
        f"{total['flops_unknown']} op(s) with no formula in torch.utils.flop_counter; "
        f"parameters {total['params']:,}",
        f"saved for backward (each storage once): activations {human_bytes(s['activation'])}, "
        f"inputs {human_bytes(s['input'])}, parameters {human_bytes(s['parameter'])}, "
        f"buffers {human_bytes(s['buffer'])}" + where,
    ]
    if "time_ns" in total:
        lines.append(f"time (--time): {_time_cell(total)} over these ops, backward calls and optimizer steps "
                     "included")
    if total["saved_unknown"]:
        lines.append(f"{total['saved_unknown']} autograd node(s) whose saved tensors were not read (a saved-tensor "
                     "hook: save_on_cpu, the program's own): their memory is unknown")
    return lines


def show_costs(G, step=None, top: int = 10, as_json=False):
    """Print (or, with ``as_json``, return) the costs of trace ``G``, or of its step
    ``step``: the totals, a row per module (each with the modules inside it) and the
    ``top`` source lines holding the most activation memory for backward."""
    c = costs(G, step)
    modules, lines, total = by_module(G, c), by_line(G, c), totals(c)
    if as_json:
        return {"step": step, "total": total, "peak": c.peak, "modules": modules, "lines": lines}
    con = make_console()
    for text in _headline(G, c, total, step):
        con.print(text)
    timed = "time_ns" in total
    time_col = ("time",) if timed else ()
    print_table(con, ("module", "ops", "params", "FLOPs", *time_col, "saved activations", "saved inputs",
                      "saved params"),
                ((("  " * r["module"].count(".") + plain(r["module"])) if r["module"] else "(outside modules)",
                  r["ops"], f"{r['params']:,}" if r["params"] else "", _flop_cell(r),
                  *((_time_cell(r),) if timed else ()), _saved_cell(r, "activation"),
                  _saved_cell(r, "input"), _saved_cell(r, "parameter")) for r in modules))
    print_table(con, ("line", "code", "ops", "FLOPs", *time_col, "saved activations"),
                ((f"{os.path.basename(r['file'] or '?')}:{r['line']}", plain(r["code"] or ""), r["ops"],
                  _flop_cell(r), *((_time_cell(r),) if timed else ()), _saved_cell(r, "activation"))
                 for r in lines[:top]))
    return None
