"""GT113: where activation checkpointing would pay: the modules whose forward pass saves
the most activation memory for backward for the least compute to redo
(:mod:`gradtrace.analyze.costs`)."""

from __future__ import annotations

from ...graph.query import made_by
from ...graph.steps import find_steps
from ..costs import by_module, costs, totals
from ..summary import human_bytes
from .findings import finding, register

__all__ = ["MIN_BYTES", "SHARE"]

MIN_BYTES = 8 << 20  # a step keeping less activation memory than this has nothing to gain
SHARE = 0.25  # a module must keep this share of the step's activations to be worth wrapping
_MOST = 3


@register(
    "GT113", "info", "activation checkpointing would free memory here",
    "x = self.block(x)  # the block keeps most of the step's activations until backward",
    "Autograd keeps what each op saved for backward until backward runs. Wrapping a module's "
    "call in torch.utils.checkpoint.checkpoint keeps only its inputs and reruns its forward "
    "during backward: the memory its ops saved is freed, for the FLOPs of its forward once more.",
    "Wrap the module's call: `x = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False)`.",
)
def _gt113(q):
    G = q.G
    if _saved_at_most(G) < MIN_BYTES:  # no step can keep more than the whole trace saved
        return
    steps = find_steps(G)
    step = steps.last_complete if steps.count > 1 else None
    held = totals(costs(G, step, flops=False, steps=steps))["saved"]["activation"]
    if held < MIN_BYTES:  # (asked first: FLOPs need torch imported, which reading a trace does not)
        return
    c = costs(G, step, steps=steps)
    made_in = _made_in(G)
    candidates = []
    for row in by_module(G, c):
        path = row["module"]
        if "." not in path:  # the whole model: checkpointing it reruns everything at once
            continue
        ops = _ops_in(G, c, path)
        freed = sum(c.nbytes.get(sid, 0) for op in ops for sid, kind in (c.saved.get(op) or {}).items()
                    if kind == "activation" and _inside(made_in.get(sid), path))
        if freed >= SHARE * held:
            candidates.append((freed / (row["flops"] + 1), freed, path, row, ops))
    chosen = []
    for _, freed, path, row, ops in sorted(candidates, key=lambda x: -x[0]):
        if any(_inside(path, p) or _inside(p, path) for p, *_ in chosen):
            continue  # one of a module and the modules inside it
        chosen.append((path, freed, row, ops))
        if len(chosen) == _MOST:
            break
    for path, freed, row, ops in chosen:
        first = min(ops, key=q.seq)
        mod = G._node.get(f"mod:{path}", {})
        redo = (f"{row['flops']:,} FLOPs of its forward pass again" if row["flops"] else "its forward pass again")
        if row["flops_unknown"]:
            redo += f" ({row['flops_unknown']} of its ops have no FLOP formula)"
        share = f"{freed / held:.0%}"
        where = f"step {step}" if step else "the trace"
        yield finding(
            q, "GT113",
            f"checkpointing {path} ({mod.get('type') or 'module'}) would free {human_bytes(freed)} of the "
            f"{human_bytes(held)} of activations {where} keeps for backward ({share}), for {redo}",
            [(first, "first op of the module")],
            fix=_fix(q, path, ops))


def _fix(q, path, ops) -> str:
    lines = {(q.N[op].get("file"), q.N[op].get("line")) for op in ops}
    call = f"`out = torch.utils.checkpoint.checkpoint({_attribute(path)}, *inputs, use_reentrant=False)`"
    if len(lines) == 1:  # library code: its ops are on the line of the user's that called it
        return f"wrap the call at {q.where(next(iter(ops)))} in {call}"
    return f"wrap the call of {path} in {call}; its forward starts at {q.where(min(ops, key=q.seq))}"


def _saved_at_most(G) -> int:
    """The bytes of every storage any autograd node of ``G`` saved, each once: more than
    any one step keeps (found without finding the steps)."""
    N, succ = G._node, G._succ
    storages, extra = set(), 0
    for n, d in N.items():
        if d.get("kind") != "grad_fn":
            continue
        for t, keyed in succ[n].items():
            if any(e.get("kind") == "saves" for e in keyed.values()):
                storages.add(N[t].get("storage"))
        storages.update(d.get("saved_storages") or ())
        extra += d.get("saved_untracked_bytes") or 0
    return extra + sum(N[s].get("nbytes") or 0 for s in storages if s in N)


def _attribute(path: str) -> str:
    """How the parent's forward most likely names module ``path``: ``self.block``,
    ``self.blocks[3]`` for ``GPT.blocks.3``."""
    parts = path.split(".")
    if parts[-1].isdigit() and len(parts) > 2:
        return f"self.{parts[-2]}[{parts[-1]}]"
    return f"self.{parts[-1]}"


def _inside(path, outer) -> bool:
    return path is not None and (path == outer or path.startswith(outer + "."))


def _ops_in(G, c, path) -> list:
    ops = set(c.flops) | set(c.saved)
    return [op for op in ops if _inside(G._node[op].get("module") or "", path)]


def _made_in(G) -> dict:
    """``{storage: module path}`` of the op that made the first tensor on each storage
    (``fn:N:untracked``: the module of the node's op)."""
    N, out = G._node, {}
    for n, d in N.items():
        if d.get("kind") == "tensor" and d.get("version") == 0 and d.get("storage") not in out:
            made = made_by(G, n)
            if made is not None:
                out[d["storage"]] = N[made].get("module") or ""
        elif d.get("kind") == "grad_fn" and d.get("saved_untracked_bytes") and d.get("op") in N:
            out[f"{n}:untracked"] = N[d["op"]].get("module") or ""
    return out
