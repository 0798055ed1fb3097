"""The ``forward`` view: ops in program order, each drawn as itself or inside the element
it folds into (a collapsed module, a run of repeated blocks, one node for a line of
library work), parameters folded into the ops that use them, the user's ``no_grad``
regions as dashed frames. The tensors between the elements are :mod:`.flow`.
"""

from __future__ import annotations

from ..graph.names import name_of
from ..graph.query import numel
from . import fold
from .flow import draw_flow, draw_writes, stack_lines
from .picture import (
    CATEGORY_COLORS,
    DEFAULT_DEPTH,
    FOLDED_FILL,
    WRITE_CATEGORIES,
    Picture,
    cut,
    esc,
    human,
    lines,
    op_name,
    shape_text,
)

__all__ = ["Forward", "count_elements"]


class Forward:
    """The forward view of picture ``p``: which element draws each op, and the drawing."""

    def __init__(self, p: Picture):
        self.p = p
        self.G = p.G
        self.owner: dict = {}  # op -> the element that draws it
        self.members: dict = {}  # element -> its ops, in program order
        self.calls: dict = {}  # module called once per pass of a loop -> its calls
        self.line_runs: dict = {}
        self.absorbed: dict = {}  # buffer update op -> the op whose label lists it
        self.mode_region: dict = {}  # grad-mode op -> the no_grad region its frame stands for
        self.no_grad_region: dict = {}
        self.module_ops: dict = {}
        self.parents: set = set()

    def owners(self):
        """Return {op: drawn element} for the selected ops, and {element: (kind, info)}."""
        G, p = self.G, self.p
        owner, info = {}, {}
        runs = p.runs()
        ordered = sorted(p.ops, key=lambda o: G.nodes[o].get("seq", 0))
        # A loop inside the step (an RNN cell per time step, a policy per environment
        # step) is drawn once, with its count, rather than once per pass.
        self.calls = fold.repeated_calls([G.nodes[n].get("module") for n in ordered])
        self.line_runs = fold.repeated_lines([G.nodes[n] for n in ordered if p.steps.phase_of[n] != "backward"])
        line_runs = self.line_runs
        for n in ordered:
            d = G.nodes[n]
            mod = d.get("module")
            loop = fold.outermost(mod, self.calls)
            key = f"mod:{loop}" if loop else fold.element_of(G, mod, p.depth, runs)
            if not mod and d.get("line") and p.steps.phase_of[n] != "backward" and (
                    d.get("direct") is False or (d.get("file"), d["line"]) in line_runs):
                key = f"line:{d.get('file')}:{d['line']}"
                owner[n] = key
                info.setdefault(key, ["line", d, 0])[2] += 1
            elif key:
                owner[n] = key
                kind = "run" if key.startswith("run:") else "module"
                info.setdefault(key, [kind, key[len("mod:"):] if kind == "module" else key, 0])[2] += 1
            else:
                owner[n] = n
                info[n] = ["op", d, 1]
        self.absorb_buffer_updates(owner, info)
        return owner, info

    def absorb_buffer_updates(self, owner, info):
        """An in-place op on a module's own buffers alone (BatchNorm's
        ``num_batches_tracked += 1``) joins the module's main op as a label line, so
        it does not float beside the data flow: updates ``owner`` and ``info``."""
        G = self.G
        by_module: dict = {}
        for n in sorted(info, key=lambda k: G.nodes[k].get("seq", 0) if k in G.nodes else 0):
            if info[n][0] == "op" and G.nodes[n].get("module"):
                by_module.setdefault(G.nodes[n]["module"], []).append(n)
        self.absorbed = {}
        for ops in by_module.values():
            for n in ops:
                d = G.nodes[n]
                ins = [t for t, _, k in G.in_edges(n, data="kind") if k == "input"]
                if d.get("category") not in WRITE_CATEGORIES or not ins or not all(self.p.is_param(t) for t in ins):
                    continue
                host = next((o for o in ops if o != n and o not in self.absorbed), None)
                if host is None:
                    continue
                owner[n] = host
                info[host][2] += 1
                del info[n]
                self.absorbed[n] = host

    def params_used(self, ops) -> list:
        """Return the parameter nodes read by ``ops``, one per parameter (first version seen)."""
        G = self.G
        seen, out = set(), []
        for n in sorted(ops, key=lambda o: G.nodes[o].get("seq", 0)):
            for t, _, k in G.in_edges(n, data="kind"):
                if k == "input" and G.nodes[t].get("kind") == "tensor" and self.p.is_param(t):
                    tid = G.nodes[t].get("tid")
                    if tid not in seen:
                        seen.add(tid)
                        out.append(t)
        return out

    def param_text(self, t, module) -> str:
        """Return a parameter's label line: its name relative to ``module``, its shape."""
        d = self.G.nodes[t]
        return f"{fold.relative(d.get('label') or name_of(d), module)} {shape_text(d.get('shape'))}"

    def op_element(self, n, d):
        """Draw op ``n`` as its own box (with the parameters it reads)."""
        p = self.p
        if n in self.mode_region:  # `with torch.no_grad():` is drawn as the frame it opens
            return
        mod = d.get("module")
        extra = [a for a, h in self.absorbed.items() if h == n]
        params = self.params_used([n])
        p.counts["params"] += len(params)
        head = op_name(d)
        where = mod
        if mod and mod not in self.parents:  # a leaf module: no box around its ops, its name in their labels
            where = mod.rsplit(".", 1)[0] if "." in mod else None
            head = f"{mod.rsplit('.', 1)[-1]}: {head}"
        body = [head] + [self.param_text(t, mod) for t in params]
        for a in extra:
            names = [self.param_text(t, mod).split(" ")[0] for t in self.params_used([a])]
            body.append(f"+ {', '.join(names)} {op_name(self.G.nodes[a])}")
        if not mod:
            body.append(f"{p.where_loc(d)}: {cut(d.get('code'))}".rstrip(": ") if d.get("line") else "")
        cat = d.get("category", "other")
        attrs = dict(label=lines(*body), shape="box", style="filled,rounded",
                     fillcolor=CATEGORY_COLORS.get(cat, "#ffffff"),
                     tooltip=esc(f"{p.where_loc(d)}: {d.get('code') or ''}"))
        if cat in WRITE_CATEGORIES:
            attrs.update(penwidth="2", color="#cc0000")
        if d.get("error"):
            attrs.update(penwidth="3", color="#cc0000", style="filled,bold")
        frame = self.no_grad_frame(n, d) if not mod else None
        p.add_node(n, frame if frame is not None else p.cluster(where), **attrs)

    def no_grad_frame(self, n, d):
        """Return the dashed frame around a user's ``no_grad`` region the op is in, or None."""
        if d.get("grad_enabled", True) or d.get("category") == "grad_mode":
            return None
        return self.p.region_frame(self.no_grad_region.get(n))

    def regions(self):
        """Number each run of ops under no_grad (in program order) and return ``{op:
        region}``. Also sets the picture's ``module_region`` (root module -> the one
        region all its ops ran in) and ``region_label``, and, for the grad-mode ops that
        open and close a region (``with torch.no_grad():``), ``mode_region`` (their
        frame stands for them)."""
        G, p = self.G, self.p
        out, region, open_ = {}, 0, False
        self.mode_region, p.region_label = {}, {}
        modes = []  # grad-mode ops since the last other op
        roots: dict = {}  # root module -> regions of its ops (None: grad enabled)
        for n in sorted(p.ops, key=lambda o: G.nodes[o].get("seq", 0)):
            d = G.nodes[n]
            if d.get("category") == "grad_mode":
                modes.append((n, d))
                continue
            off = not d.get("grad_enabled", True)
            if off and not open_:
                region += 1
                key = f"nograd:{region}"
                if modes:  # the user's `with torch.no_grad():` that opened it
                    first = modes[0][1]
                    p.region_label[key] = (f"{op_name(first)} · {p.where_loc(first)}".rstrip(" ·")
                                           if first.get("line") else op_name(first))
            if off != open_:  # the grad-mode ops just before this op opened or closed the region
                for m, _ in modes:
                    self.mode_region[m] = f"nograd:{region}"
            modes = []
            open_ = off
            if off:
                out[n] = f"nograd:{region}"
            mod = d.get("module")
            if mod:
                roots.setdefault(mod.split(".", 1)[0], set()).add(out.get(n))
        if open_:
            for m, _ in modes:
                self.mode_region[m] = f"nograd:{region}"
        p.module_region = {r: next(iter(keys)) for r, keys in roots.items() if len(keys) == 1 and None not in keys}
        # A region's grad-mode ops are drawn as its frame only where the frame is drawn:
        # it holds a top-level op or a whole module call.
        framed = {k for n, k in out.items() if not G.nodes[n].get("module")} | set(p.module_region.values())
        self.mode_region = {m: k for m, k in self.mode_region.items() if k in framed}
        return out

    def folded_element(self, key, kind, what, count):
        """Draw element ``key`` that stands for ``count`` ops: a folded module, a run of
        repeated blocks or a line of library work."""
        G, p = self.G, self.p
        members = self.members[key]
        params = self.params_used(members)
        p.counts["params"] += len(params)
        n_params = sum(numel(G.nodes[t].get("shape")) for t in params)
        ps = f"{len(params)} params ({human(n_params)})" if params else ""
        if kind == "line":
            d = what
            runs_of = self.line_runs.get((d.get("file"), d.get("line")))
            label = lines(f"{p.where_loc(d)}: {cut(d.get('code'))}",
                          f"{count} ops ({p.steps.phase_of[members[0]]})"
                          + (f", run {runs_of} times" if runs_of else ""), ps)
            p.add_node(key, shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label,
                       tooltip=esc(d.get("code") or ""))
            return
        if kind == "run":
            _, parent, typ, first, last = key.split(":")
            n_blocks = int(last) - int(first) + 1
            label = lines(f"{n_blocks} × {typ}", f"{parent.rsplit('.', 1)[-1]}.{first}–{last}", f"{count} ops", ps)
            where = parent
        else:
            where = what.rsplit(".", 1)[0] if "." in what else None
            calls = self.calls.get(what)
            label = lines(what.rsplit(".", 1)[-1] if where else fold.user_path(G, what), fold.mod_type(G, what),
                          f"{calls} calls, {count} ops" if calls else f"{count} ops", ps)
        p.add_node(key, p.cluster(where), shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label)

    def draw(self):
        """Draw the forward view into the picture: its elements, then the tensors between them."""
        G, p = self.G, self.p
        self.owner, info = self.owners()
        self.members = {}
        for n, o in sorted(self.owner.items(), key=lambda no: G.nodes[no[0]].get("seq", 0)):
            self.members.setdefault(o, []).append(n)
        for n, o in self.owner.items():  # a finding on an op inside a folded element marks the element
            if n != o and n in p.marks:
                p.marks.setdefault(o, [])
                p.marks[o] += [c for c in p.marks[n] if c not in p.marks[o]]
        self.no_grad_region = self.regions()
        self.module_ops, self.parents = {}, set()
        for n, o in self.owner.items():
            if o == n and G.nodes[n].get("module"):
                m = G.nodes[n]["module"]
                self.module_ops[m] = self.module_ops.get(m, 0) + 1
        for key in info:
            kind, what, _ = info[key]
            path = what if kind == "module" else (key.split(":")[1] if kind == "run" else None)
            while path and "." in path:
                path = path.rsplit(".", 1)[0]
                self.parents.add(path)
        for m in self.module_ops:
            for prefix in fold.prefixes(m)[:-1]:
                self.parents.add(prefix)
        for key in sorted(info, key=self.first_seq):
            kind, what, count = info[key]
            if kind == "op":
                self.op_element(key, what)
            else:
                self.folded_element(key, kind, what, count)
        p.counts["ops"] = len(p.ops)
        draw_flow(p, self.owner, self.calls)
        stack_lines(p, self.first_seq)
        if p.tensors:
            draw_writes(p)

    def first_seq(self, key):
        """Return the program position of element ``key``: its op's, or its first member's."""
        if key in self.G.nodes:
            return self.G.nodes[key].get("seq", 0)
        return self.G.nodes[self.members[key][0]].get("seq", 0)


def count_elements(G, depth=DEFAULT_DEPTH, step=None, phase=None) -> int:
    """Return how many op elements (ops, folded modules, runs, folded lines) the
    forward view of ``G`` draws with these options, without making its DOT text:
    what decides whether a drawing is small enough to lay out."""
    _, info = Forward(Picture(G, depth, step, phase)).owners()
    return len(info)
