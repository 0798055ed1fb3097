"""GT103, GT104, GT105, GT109, GT111: writes that reach (or miss) other names of the same
memory: views, reshape copies, numpy buffers, out= tensors, .to() that returned itself."""

from __future__ import annotations

from collections import defaultdict

from . import fixes as fx
from .findings import WRITES, code_of, finding, register, statement_of
from .graph import alias_of, is_view, written_tensor

__all__ = []


@register(
    "GT103", "info", "write through a view changes its base and other views",
    "r = x[0, :]; r += 1  # x[0] changed too",
    "A view shares storage with its base: writing through it changes the base and every other "
    "view of the same elements.",
    "If the base must not change, write into a copy: `r = x[0, :].clone()`.",
)
def _gt103(q):
    by_op = defaultdict(list)
    for u, v, d in q.edges["next_version"]:
        if d.get("op") is not None and not d.get("metadata_only") and not d.get("external"):
            by_op[d["op"]].append(u)
    for w in sorted(by_op, key=q.seq):
        if q.N[w].get("category") not in WRITES or q.N[w].get("direct") is False:
            continue  # not a write, or library code's own (nn.Embedding zeroing its padding row)
        changed = by_op[w]
        wt = written_tensor(q, w, changed)
        if wt is None or not is_view(q, wt) or alias_of(q, wt):
            continue
        others = [u for u in changed if q.N[u]["tid"] != q.N[wt]["tid"]]
        if not others:
            continue
        made = q.producer(q.versions[q.N[wt]["tid"]][0])
        if made is not None and not q.label(wt) and (q.N[made].get("file"), q.N[made].get("line")) == (
                q.N[w].get("file"), q.N[w].get("line")):
            continue  # `x[:, :10] *= 0`: a slice made to be written, in one statement: writing the base is the point
        names = ", ".join(q.name(u) for u in others)
        lhs = fx.assigned_name(code_of(q, made)) if made else None
        rhs = fx.statement(code_of(q, made)).split("=", 1)[1].strip() if lhs else None
        fix = (f"if {names} must not change, make the view a copy at {q.where(made)}: `{lhs} = {rhs}.clone()`"
               if lhs else None)
        yield finding(q, "GT103",
                 f"writing the view {q.name(wt)} with {q.N[w]['name']} ({q.where(w)}) also changed {names}",
                 [(w, "written by")], [(wt, "written")] + [(u, "changed") for u in others], fix=fix)


_RESHAPES = ("Tensor.reshape", "torch.reshape", "Tensor.reshape_as", "Tensor.flatten", "torch.flatten")


@register(
    "GT104", "warning", "in-place write to a copy that reshape made",
    "t = x.t().reshape(12); t[0] = 5  # x does not change",
    "`reshape` (and `flatten`) return a view when the layout allows and a copy otherwise; here "
    "it copied, so writing the result leaves the original unchanged.",
    "Write into the original (or use `view`, which fails loudly instead of copying); if a copy "
    "is what you want, say so with `.clone()`.",
)
def _gt104(q):
    for op in q.ops_named(_RESHAPES):
        d = q.N[op]
        if d["category"] == "view":
            continue
        srcs, outs = q.inputs(op), q.outputs(op)
        if not srcs or not outs or q.N[outs[0]].get("storage") == q.N[srcs[0]].get("storage"):
            continue
        o = outs[0]
        for n in q.versions[q.N[o]["tid"]]:
            w = next((e.get("op") for _, e in q.out["next_version"][n]
                      if e.get("op") and q.seq(e["op"]) > d["seq"]
                      and q.N[e["op"]].get("category") in WRITES), None)
            if w is not None:
                yield finding(q, "GT104",
                         f"{q.name(o)} is a copy made by {d['name']} ({q.where(op)}), not a view of "
                         f"{q.name(srcs[0])}; the write by {q.N[w]['name']} ({q.where(w)}) does not change it",
                         [(w, "written by"), (op, "copied by")], [(o, "copy"), (srcs[0], "original")],
                         fix=(f"to change {q.name(srcs[0])}, write into it (or make {q.name(o)} with `.view(...)`, "
                              f"which fails loudly instead of copying) rather than {statement_of(q, w)} ({q.where(w)}); "
                              "if a copy is meant, say so with `.clone()`"))
                break


@register(
    "GT105", "warning", "write on one side of a numpy/tensor shared buffer",
    "b = torch.from_numpy(a); s = b.sum(); a += 1  # b changed too, torch never saw it",
    "`.numpy()` and `torch.from_numpy` share one buffer: a write on either side changes the "
    "other. A numpy-side write is invisible to torch (no version bump): results computed from "
    "the tensor before and after it differ, and autograd cannot notice.",
    "Copy when the two must be independent: `torch.tensor(a)` or `t.numpy().copy()`.",
)
def _gt105(q):
    np_of = defaultdict(set)  # storage -> numpy nodes
    for a, t, _ in q.edges["shares_memory"]:
        arr, ten = (a, t) if q.kind_of(a) == "numpy" else (t, a)
        if q.kind_of(ten) == "tensor":
            np_of[q.N[ten].get("storage")].add(arr)

    def np_seen(arr):  # the first op that touched the array
        ops = [o for o in (q.producer(arr),) if o] + q.consumers(arr)
        return min((q.seq(o) for o in ops if q.kind_of(o) == "op"), default=-1)

    def np_name(arr):
        ops = sorted([o for o in (q.producer(arr),) if o] + q.consumers(arr), key=q.seq)
        return f"the numpy array of {q.N[ops[0]]['name']} ({q.where(ops[0])})" if ops else f"numpy array {arr}"

    done = set()
    for u, _, d in q.edges["next_version"]:
        sid = q.N[u].get("storage")
        if d.get("metadata_only") or sid not in np_of:
            continue
        if d.get("external"):
            at = d.get("seen_at")
            key = ("ext", at, sid)
            if key in done or at not in q.N:
                continue
            done.add(key)
            reads = [o for n in q.on_storage[sid] for o in q.consumers(n)
                     if q.kind_of(o) == "op" and q.seq(o) < q.seq(at)]
            arrs = sorted(np_of[sid])
            first = min(reads, key=q.seq) if reads else None
            msg = (f"numpy wrote the buffer of {q.name(u)} (noticed at {q.N[at]['name']}, {q.where(at)})"
                   + (f" after torch read it at {q.N[first]['name']} ({q.where(first)}): results before and "
                      "after differ and torch saw no write" if first else ": torch saw no write"))
            yield finding(q, "GT105", msg, ([(first, "read by")] if first else []) + [(at, "noticed at")],
                     [(u, "changed")], arrs, severity="warning" if first else "info", fix=_np_fix(q, u))
        else:
            w = d.get("op")
            if w is None or ("w", w, sid) in done:
                continue
            arrs = sorted(a for a in np_of[sid] if np_seen(a) < q.seq(w))
            if not arrs:
                continue
            done.add(("w", w, sid))
            yield finding(q, "GT105",
                     f"{q.N[w]['name']} ({q.where(w)}) wrote {q.name(u)}, which shares its buffer with "
                     f"{' and '.join(np_name(a) for a in arrs)}: the array changed too",
                     [(w, "written by")], [(u, "changed")], arrs, severity="info", fix=_np_fix(q, u))


def _np_fix(q, t):
    """Where the shared buffer was made, rewritten to copy."""
    made = q.producer(q.versions[q.N[t]["tid"]][0])
    code = fx.statement(code_of(q, made)) if made else None
    if code and "torch.from_numpy(" in code:
        return (f"`{code.replace('torch.from_numpy(', 'torch.tensor(', 1)}` ({q.where(made)}) copies the array, "
                f"so {q.name(t)} and the array stay independent")
    if code and ".numpy()" in code:
        return f"`{code.replace('.numpy()', '.numpy().copy()', 1)}` ({q.where(made)}) gives numpy its own copy"
    return None



@register(
    "GT109", "warning", "out= tensor of the wrong shape silently resized",
    "result = torch.empty(5, 3); torch.add(x, y, out=result)  # x, y are 4x3: result becomes 4x3",
    "PyTorch resizes an `out=` tensor whose shape does not match the result (with only a "
    "deprecation warning); other references to its old shape or storage no longer agree.",
    "Allocate `out` with the result's shape (`torch.empty_like(x)`), or drop `out=`.",
)
def _gt109(q):
    for op in q.out_ops:
        for u, e in q.input_edges(op):
            if e.get("pos") != "out" or q.kind_of(u) != "tensor":
                continue
            for v, d in q.out["next_version"][u]:
                old, new = q.N[u]["shape"], q.N[v]["shape"]
                if d.get("op") == op and old != new and all(old):
                    yield finding(q, "GT109",
                             f"out= tensor {q.name(u)} had shape {old} but {q.N[op]['name']} ({q.where(op)}) "
                             f"produces {new}: PyTorch resized it", [(op, "resized by")],
                             [(u, "before"), (v, "after")],
                             fix=f"allocate {q.name(u)} with shape {new} (e.g. `torch.empty_like(...)` of the "
                                 f"result) before {statement_of(q, op)}, or drop `out=`")



@register(
    "GT111", "warning", ".to(device) returned the same tensor, then a write",
    "z = x.to('cpu'); z.add_(1)  # x changed too; on a GPU, z would be a copy",
    "`.to()` (and `.cpu()`, `.cuda()`) return the tensor itself when it is already there, and a "
    "copy otherwise. A write to either name then changes both here, but only one of them on "
    "another device: the program means something else depending on where it runs.",
    "Do not write after `.to()`, or write to the original before moving, or make the intent "
    "explicit with `.clone()`.",
)
def _gt111(q):
    for u, _, e in q.edges["moved_to"]:
        if e.get("copy", True) or e.get("src_device") != e.get("dst_device"):
            continue
        tid = q.N[u]["tid"]
        if q.is_param(tid) or (q.N[u].get("is_leaf") and q.N[u].get("requires_grad")):
            continue  # module.to(device): parameters and buffers
        move = next((o for o in q.uses(tid) if q.N[o]["name"] in ("Tensor.to", "Tensor.cpu", "Tensor.cuda")
                     and q.N[o]["category"] == "move" and u in q.inputs(o)
                     and q.N[o].get("direct") is not False), None)  # not library code (GradScaler's own state)
        if move is None:
            continue
        for n in q.versions[tid]:
            w = next((d.get("op") for _, d in q.out["next_version"][n]
                      if d.get("op") and q.seq(d["op"]) > q.seq(move) and not q.N[d["op"]].get("module")
                      and q.N[d["op"]].get("direct") is not False
                      and q.N[d["op"]]["category"] in WRITES), None)  # not a module's buffer update
            if w is not None:
                yield finding(q, "GT111",
                         f"{q.N[move]['name']} ({q.where(move)}) returned {q.name(u)} itself (already on "
                         f"{e['dst_device']}); the write by {q.N[w]['name']} ({q.where(w)}) changes both names "
                         "here, but only one of them on another device",
                         [(move, "same tensor"), (w, "written by")], [(u, "moved")],
                         fix=(f"`{fx.with_clone(code_of(q, move))}` makes the copy explicit on every device"
                              if fx.with_clone(code_of(q, move)) else None))
                break


