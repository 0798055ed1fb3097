"""DOT text of the static views: ``forward``, ``autograd``, ``memory`` and ``all``.

Data flows top to bottom. By default tensors are edges labelled with their shape,
parameters are folded into the op that uses them, one step of a training loop is
drawn (the last complete one) without parameter initialisation and optimizer
internals, modules deeper than ``depth`` collapse into one box each and runs of
repeated blocks into one ``N × Type`` box. A title and a legend say what is drawn.
"""

from __future__ import annotations

from pathlib import Path

import pydot

from ..graph.names import name_of
from . import fold
from .steps import PHASES, find_steps, parse_phases, select_ops

VIEWS = ("forward", "autograd", "memory", "all")
DEFAULT_DEPTH = 3

CATEGORY_COLORS = {
    "factory": "#d9ead3", "compute": "#cfe2f3", "view": "#fff2cc", "inplace": "#f4cccc",
    "out": "#f4cccc", "setitem": "#f4cccc", "move": "#d9d2e9", "convert": "#d9d2e9",
    "numpy": "#fce5cd", "backward": "#ead1dc", "grad_mode": "#eeeeee", "collective": "#b6d7a8",
    "other": "#ffffff",
}
WRITE_CATEGORIES = {"inplace", "out", "setitem"}
FOLDED_FILL = "#e6e6e6"
MARK_COLOR = "#cc0000"
LABEL_CODE_CHARS = 38
MEMORY_COLUMNS = 8

# Control characters (C0 and DEL) are shown as their Unicode pictures (U+2400...):
# Graphviz rejects most of them, and a label must say what is in the trace.
_CONTROLS = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421}
_CONTROLS[ord("\n")] = _CONTROLS[ord("\r")] = _CONTROLS[ord("\t")] = ord(" ")


def esc(text) -> str:
    """Text from the trace as one line of a DOT label (a backslash stays a backslash)."""
    return str(text).replace("\\", "\\\\").translate(_CONTROLS)


def lines(*parts) -> str:
    """A DOT label of several lines, each escaped (empty parts are left out)."""
    return "\\n".join(esc(p) for p in parts if p)


def _quoted(attrs: dict) -> dict:
    # pydot passes a value that looks quoted or like HTML through as it is, so a label
    # from the trace is quoted here; labels hold DOT's own \n line breaks already.
    for k in ("label", "tooltip", "xlabel"):
        v = attrs.get(k)
        if isinstance(v, str) and not (k == "label" and v.startswith("<") and attrs.get("shape") == "plaintext"):
            attrs[k] = '"' + v.replace('"', '\\"') + '"'
    return attrs


def shape_text(shape) -> str:
    if shape is None:
        return "?"
    return "×".join(str(s) for s in shape) if shape else "scalar"


def cut(code: str, n: int = LABEL_CODE_CHARS) -> str:
    """``code`` in at most ``n`` characters, cut at a word or bracket boundary with …"""
    code = " ".join(str(code or "").split())
    if len(code) <= n:
        return code
    head = code[: n - 1]
    for sep in (" ", "(", ",", "."):
        i = head.rfind(sep)
        if i > n // 2:
            head = head[: i + (sep != " ")]
            break
    return head.rstrip() + "…"


def op_name(d) -> str:
    return (d.get("name") or "?").replace("torch.nn.functional.", "F.").replace("torch.", "").replace(
        "Tensor.", ".")


def stat(s) -> str:
    return f"‖{s['norm']:.3g}‖" if s and s.get("norm") is not None else ""


class Picture:
    """One view of a trace being drawn into a pydot graph."""

    def __init__(self, G, depth=DEFAULT_DEPTH, step=None, phase=None, tensors=False, saved=False, marks=None):
        self.G = G
        self.depth = depth
        self.tensors = tensors
        self.saved = saved
        self.marks = {n: list(c) for n, c in (marks or {}).items()}
        self.phases = parse_phases(phase)
        self.steps = find_steps(G)
        self.ops, self.step, self.micro = select_ops(G, self.steps, step, self.phases)
        files = {d.get("file") for n in self.ops for d in [G.nodes[n]] if d.get("file")}
        self.several_files = len(files) > 1
        # no_grad regions (set by regions() for the forward view; other views have none)
        self.mode_region, self.region_label, self.module_region = {}, {}, {}
        self.ids: dict = {}
        self.dot = pydot.Dot("gradtrace", graph_type="digraph", rankdir="TB", fontname="Helvetica",
                             fontsize="11", compound="true", newrank="true", ranksep="0.3", nodesep="0.25")
        self.dot.set_node_defaults(fontname="Helvetica", fontsize="10", margin="0.08,0.03", height="0.3")
        self.dot.set_edge_defaults(fontname="Helvetica", fontsize="8", arrowsize="0.6", color="#555555")
        self.clusters: dict = {}
        self.drawn: set = set()
        self.codes_drawn: dict = {}
        self.placed: dict = {}  # drawn element -> the subgraph holding it
        self.counts = {"ops": 0, "params": 0}

    # -- elements -----------------------------------------------------------------------

    def nid(self, node) -> str:
        i = self.ids.get(node)
        if i is None:
            i = self.ids[node] = f"n{len(self.ids)}"
        return i

    def cluster(self, path, kind="module"):
        """The pydot subgraph that draws module ``path`` (None: the graph itself)."""
        if path is None:
            return self.dot
        c = self.clusters.get(path)
        if c is None:
            parent = path.rsplit(".", 1)[0] if "." in path else None
            # a root module by the variable the user called it through (`model`, `teacher`)
            name = path.rsplit(".", 1)[-1] if parent else fold.user_path(self.G, path)
            outer = self.cluster(parent) if parent else self.module_frame(path)
            c = pydot.Cluster(self.cluster_name(), **_quoted(dict(
                label=esc(f"{name} · {fold.mod_type(self.G, path)}"), style="rounded", color="#aaaaaa",
                fontsize="9", fontcolor="#555555", labeljust="l")))
            outer.add_subgraph(c)
            self.clusters[path] = c
        return c

    def cluster_name(self) -> str:
        self.n_clusters = getattr(self, "n_clusters", 0) + 1
        return f"c{self.n_clusters}"

    def where_loc(self, d) -> str:
        if not d.get("line"):
            return ""
        f = f"{Path(d['file']).name}:" if self.several_files and d.get("file") else "line "
        return f"{f}{d['line']}"

    def add_node(self, key, where=None, codes=(), **attrs):
        if key in self.drawn:
            return
        self.drawn.add(key)
        marked = bool(codes) or key in self.marks
        codes = sorted(set(codes) | set(self.marks.get(key, ())))
        if marked:
            attrs.update(penwidth="3", color=MARK_COLOR)
        if codes:
            attrs["label"] = attrs.get("label", "") + "\\n" + esc("⚠ " + ", ".join(codes))
            self.codes_drawn[key] = codes
        where = where if where is not None else self.dot
        self.placed[key] = where
        where.add_node(pydot.Node(self.nid(key), **_quoted(attrs)))

    def add_edge(self, u, v, **attrs):
        self.dot.add_edge(pydot.Edge(self.nid(u), self.nid(v), **_quoted(attrs)))

    def tensor_node(self, n, where=None, codes=()):
        d = self.G.nodes[n]
        written = (d.get("version") or 0) > 0
        self.add_node(n, where, codes, label=lines(name_of(d) + (f" v{d['version']}" if written else ""),
                                                   f"{shape_text(d.get('shape'))} {d.get('dtype') or ''}"),
                      shape="ellipse", style="filled", fillcolor="#fde9d9" if written else "#f3f3f3",
                      fontsize="9")

    # -- forward ------------------------------------------------------------------------

    def is_param(self, t) -> bool:
        return bool(self.G.nodes[t].get("param_of"))

    def owners(self):
        """{op: drawn element} for the selected ops, and {element: (kind, info)}."""
        G = self.G
        owner, info = {}, {}
        runs = self.runs()
        ordered = sorted(self.ops, key=lambda o: G.nodes[o].get("seq", 0))
        # A loop inside the step (an RNN cell per time step, a policy per environment
        # step) is drawn once, with its count, rather than once per pass.
        self.calls = fold.repeated_calls([G.nodes[n].get("module") for n in ordered])
        self.line_runs = fold.repeated_lines([G.nodes[n] for n in ordered if self.steps.phase_of[n] != "backward"])
        lines = self.line_runs
        for n in ordered:
            d = G.nodes[n]
            mod = d.get("module")
            loop = fold.outermost(mod, self.calls)
            key = f"mod:{loop}" if loop else fold.element_of(G, mod, self.depth, runs)
            if not mod and d.get("line") and self.steps.phase_of[n] != "backward" and (
                    d.get("direct") is False or (d.get("file"), d["line"]) in lines):
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

    def runs(self) -> dict:
        """Runs of repeated blocks to fold: at the default depth or less (a deeper
        ``depth`` draws every block)."""
        if self.depth > DEFAULT_DEPTH:
            return {}
        return fold.runs_among(self.G, {self.G.nodes[n].get("module") for n in self.ops})

    def absorb_buffer_updates(self, owner, info):
        """An in-place op on a module's own buffers alone (BatchNorm's
        ``num_batches_tracked += 1``) joins the module's main op as a label line, so
        it does not float beside the data flow."""
        G = self.G
        by_module: dict = {}
        for n in sorted(info, key=lambda k: G.nodes[k].get("seq", 0) if k in G.nodes else 0):
            if info[n][0] == "op" and G.nodes[n].get("module"):
                by_module.setdefault(G.nodes[n]["module"], []).append(n)
        self.absorbed: dict = {}
        for ops in by_module.values():
            for n in ops:
                d = G.nodes[n]
                ins = [t for t, _, k in G.in_edges(n, data="kind") if k == "input"]
                if d.get("category") not in WRITE_CATEGORIES or not ins or not all(self.is_param(t) for t in ins):
                    continue
                host = next((o for o in ops if o != n and o not in self.absorbed), None)
                if host is None:
                    continue
                owner[n] = host
                info[host][2] += 1
                del info[n]
                self.absorbed[n] = host

    def params_used(self, ops) -> list:
        """Parameter nodes read by ``ops``, one per parameter (first version seen)."""
        seen, out = set(), []
        for n in sorted(ops, key=lambda o: self.G.nodes[o].get("seq", 0)):
            for t, _, k in self.G.in_edges(n, data="kind"):
                if k == "input" and self.G.nodes[t].get("kind") == "tensor" and self.is_param(t):
                    tid = self.G.nodes[t].get("tid")
                    if tid not in seen:
                        seen.add(tid)
                        out.append(t)
        return out

    def param_text(self, t, module) -> str:
        d = self.G.nodes[t]
        return f"{fold.relative(d.get('label') or name_of(d), module)} {shape_text(d.get('shape'))}"

    def op_element(self, n, d):
        if n in self.mode_region:  # `with torch.no_grad():` is drawn as the frame it opens
            return
        mod = d.get("module")
        extra = [a for a, h in self.absorbed.items() if h == n]
        params = self.params_used([n])
        self.counts["params"] += len(params)
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
            body.append(f"{self.where_loc(d)}: {cut(d.get('code'))}".rstrip(": ") if d.get("line") else "")
        cat = d.get("category", "other")
        attrs = dict(label=lines(*body), shape="box", style="filled,rounded",
                     fillcolor=CATEGORY_COLORS.get(cat, "#ffffff"),
                     tooltip=esc(f"{self.where_loc(d)}: {d.get('code') or ''}"))
        if cat in WRITE_CATEGORIES:
            attrs.update(penwidth="2", color="#cc0000")
        if d.get("error"):
            attrs.update(penwidth="3", color="#cc0000", style="filled,bold")
        frame = self.no_grad_frame(n, d) if not mod else None
        self.add_node(n, frame if frame is not None else self.cluster(where), **attrs)

    def no_grad_frame(self, n, d):
        """The dashed frame around a user's ``no_grad`` region the op is in, or None."""
        if d.get("grad_enabled", True) or d.get("category") == "grad_mode":
            return None
        return self.region_frame(self.no_grad_region.get(n))

    def region_frame(self, key):
        if key is None:
            return None
        c = self.clusters.get(key)
        if c is None:
            c = pydot.Cluster(self.cluster_name(), **_quoted(dict(
                label=esc(self.region_label.get(key, "no_grad")), style="dashed", color="#777777", fontsize="9",
                fontcolor="#777777", labeljust="l")))
            self.dot.add_subgraph(c)
            self.clusters[key] = c
        return c

    def module_frame(self, root):
        """The ``no_grad`` frame a root module's cluster sits in: every op of its call
        ran inside one region of the user's (``with torch.no_grad(): target = teacher(x)``)."""
        return self.region_frame(self.module_region.get(root)) or self.dot

    def regions(self):
        """Number each run of ops under no_grad (in program order): ``{op: region}``.
        Also sets ``module_region`` (root module -> the one region all its ops ran in),
        and, for the grad-mode ops that open and close a region (``with
        torch.no_grad():``), ``mode_region`` (their frame stands for them) and
        ``region_label``."""
        G = self.G
        out, region, open_ = {}, 0, False
        self.mode_region, self.region_label = {}, {}
        modes = []  # grad-mode ops since the last other op
        roots: dict = {}  # root module -> regions of its ops (None: grad enabled)
        for n in sorted(self.ops, key=lambda o: G.nodes[o].get("seq", 0)):
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
                    self.region_label[key] = (f"{op_name(first)} · {self.where_loc(first)}".rstrip(" ·")
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
        self.module_region = {r: next(iter(keys)) for r, keys in roots.items() if len(keys) == 1 and None not in keys}
        # A region's grad-mode ops are drawn as its frame only where the frame is drawn:
        # it holds a top-level op or a whole module call.
        framed = {k for n, k in out.items() if not G.nodes[n].get("module")} | set(self.module_region.values())
        self.mode_region = {m: k for m, k in self.mode_region.items() if k in framed}
        return out

    def folded_element(self, key, kind, what, count):
        G = self.G
        members = self.members[key]
        params = self.params_used(members)
        self.counts["params"] += len(params)
        numel = sum(_numel(G.nodes[t].get("shape")) for t in params)
        p = f"{len(params)} params ({_human(numel)})" if params else ""
        if kind == "line":
            d = what
            runs_of = self.line_runs.get((d.get("file"), d.get("line")))
            label = lines(f"{self.where_loc(d)}: {cut(d.get('code'))}",
                          f"{count} ops ({self.steps.phase_of[members[0]]})"
                          + (f", run {runs_of} times" if runs_of else ""), p)
            self.add_node(key, shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label,
                          tooltip=esc(d.get("code") or ""))
            return
        if kind == "run":
            _, parent, typ, first, last = key.split(":")
            n_blocks = int(last) - int(first) + 1
            label = lines(f"{n_blocks} × {typ}", f"{parent.rsplit('.', 1)[-1]}.{first}–{last}", f"{count} ops", p)
            where = parent
        else:
            where = what.rsplit(".", 1)[0] if "." in what else None
            calls = self.calls.get(what)
            label = lines(what.rsplit(".", 1)[-1] if where else fold.user_path(G, what), fold.mod_type(G, what),
                          f"{calls} calls, {count} ops" if calls else f"{count} ops", p)
        self.add_node(key, self.cluster(where), shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label)

    def forward(self):
        G = self.G
        self.owner, info = self.owners()
        self.members: dict = {}
        for n, o in sorted(self.owner.items(), key=lambda no: G.nodes[no[0]].get("seq", 0)):
            self.members.setdefault(o, []).append(n)
        for n, o in self.owner.items():  # a finding on an op inside a folded element marks the element
            if n != o and n in self.marks:
                self.marks.setdefault(o, [])
                self.marks[o] += [c for c in self.marks[n] if c not in self.marks[o]]
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
            for p in fold.prefixes(m)[:-1]:
                self.parents.add(p)
        for key in sorted(info, key=lambda k: self._first_seq(k)):
            kind, what, count = info[key]
            if kind == "op":
                self.op_element(key, what)
            else:
                self.folded_element(key, kind, what, count)
        self.counts["ops"] = len(self.ops)
        self.flow()
        self.stack_lines()
        if self.tensors:
            self.writes()

    def stack_lines(self):
        """Folded lines of library work (the model's construction, opt.step()) in
        program order top to bottom, rather than side by side in one wide row."""
        keys = sorted((k for k in self.drawn if isinstance(k, str) and k.startswith("line:")), key=self._first_seq)
        for a, b in zip(keys, keys[1:]):
            self.add_edge(a, b, style="invis")

    def _first_seq(self, key):
        if key in self.G.nodes:
            return self.G.nodes[key].get("seq", 0)
        return self.G.nodes[self.members[key][0]].get("seq", 0)

    def flow(self):
        """Tensors between drawn elements: edges labelled with their shape, or (with
        ``tensors``) tensor nodes in the cluster of the module that made them."""
        G = self.G
        made, used, relays = {}, {}, {}
        for n, o in self.owner.items():
            seq = G.nodes[n].get("seq", 0)
            ins = set()
            for t, _, k in G.in_edges(n, data="kind"):
                if k == "input" and G.nodes[t].get("kind") == "tensor":
                    ins.add(t)
                    if not self.is_param(t):
                        used.setdefault(t, []).append((seq, o))
            for _, t, k in G.out_edges(n, data="kind"):
                if k == "output" and G.nodes[t].get("kind") == "tensor":
                    if t in ins:  # it returned its own input (Dropout(p=0)): the flow passes through
                        relays.setdefault(t, []).append((seq, o))
                    else:
                        made[t] = o
        pairs = set()
        groups = list(self._flow_groups(made, used, relays))
        loop_inputs = self._loop_inputs(groups)
        for t, src, dsts in groups:
            d = G.nodes[t]
            if src is None:
                # library work for one line (opt.step()) reads many outside tensors: its
                # label counts them rather than one input node each
                dsts = [c for c in dsts if not (isinstance(c, str) and c.startswith("line:"))]
                if not dsts or self.is_param(t):
                    continue
                if t in loop_inputs:  # one per pass of a loop: one node says how many
                    src, count = loop_inputs[t]
                    self.add_node(src, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                                  label=lines(f"{count} × {name_of(d).split('#')[0]}", shape_text(d.get("shape"))))
                    if (src, dsts[0]) not in pairs:
                        pairs.add((src, dsts[0]))
                        self.add_edge(src, dsts[0], label=lines(f"{count} tensors", shape_text(d.get("shape"))))
                    continue
                src = ("in", t)
                self.add_node(src, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                              label=lines(name_of(d), shape_text(d.get("shape"))), codes=self.marks.get(t, ()))
            elif not dsts:
                if self.is_param(t) or not (d.get("label") and not src.startswith(("mod:", "run:", "line:"))):
                    continue
                if self.tensors:  # the tensor node itself shows the result
                    self.tensor_node(t, self.placed.get(src), codes=self.marks.get(t, ()))
                    self.add_edge(src, t)
                    continue
                dst = ("out", t)
                self.add_node(dst, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                              label=lines(name_of(d), shape_text(d.get("shape"))), codes=self.marks.get(t, ()))
                dsts = [dst]
            if self.tensors:
                where = self.placed.get(src)  # a tensor sits in the frame of the op that made it
                self.tensor_node(t, where, codes=self.marks.get(t, ()))
                self.add_edge(src, t)
                for c in dsts:
                    self.add_edge(t, c)
                continue
            for c in dsts:
                if (src, c) in pairs:
                    continue
                pairs.add((src, c))
                # named where it crosses out of a module (`out = model(x)`) or between
                # top-level ops; inside a module the forward's own names would crowd it
                top = not G.nodes.get(self.op_of(src), {}).get("module") or \
                    not G.nodes.get(self.op_of(c), {}).get("module")
                name = name_of(d) if d.get("label") and top else ""
                label = lines(name, shape_text(d.get("shape")))
                attrs = {"label": label}
                if self.marks.get(t):
                    attrs.update(color=MARK_COLOR, penwidth="2", fontcolor=MARK_COLOR,
                                 label=label + "\\n" + esc("⚠ " + ", ".join(self.marks[t])))
                    self.codes_drawn[t] = self.marks[t]
                self.add_edge(src, c, **attrs)

    def _loop_inputs(self, groups) -> dict:
        """``{tensor: (input node key, count)}`` for the outside tensors that only a loop
        element reads (a module called once per pass, each pass with a new input)."""
        loops = {f"mod:{p}" for p in self.calls}
        by_element: dict = {}
        for t, src, dsts in groups:
            if src is None and len(dsts) == 1 and dsts[0] in loops and not self.is_param(t) \
                    and not self.marks.get(t):
                by_element.setdefault(dsts[0], []).append(t)
        return {t: (("in-loop", e), len(ts)) for e, ts in by_element.items() if len(ts) >= fold.FOLD_AT_LEAST
                for t in ts}

    def _flow_groups(self, made, used, relays):
        """``(tensor, source element, [consumer elements])`` for each tensor: a consumer
        reads it from its maker, or from the last op before it that passed it through."""
        G = self.G
        for t in sorted(set(made) | set(used), key=lambda x: (G.nodes[x].get("tid", 0), G.nodes[x].get("version", 0))):
            groups = {made.get(t): []}
            for seq, c in used.get(t, ()):
                src = made.get(t)
                for rseq, r in relays.get(t, ()):
                    if rseq < seq and r != c:
                        src = r
                groups.setdefault(src, []).append(c)
            for src, cs in groups.items():
                dsts = [c for c in dict.fromkeys(cs) if c != src]
                if src is not None and src == made.get(t) or dsts:
                    yield t, src, dsts

    def op_of(self, element):
        return element if isinstance(element, str) and element.startswith("op:") else None

    def writes(self):
        G = self.G
        # a write through a view also shows the base's new version, though no op outputs it
        edges = sorted(G.edges(data=True), key=lambda e: e[2].get("kind") != "next_version")
        for u, v, d in edges:
            k = d.get("kind")
            if k == "next_version" and u in self.drawn and not d.get("metadata_only"):
                self.tensor_node(v, self.placed.get(u))
                self.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2", fontcolor="#cc0000",
                              label="write" if d.get("visible", True) else "hidden write")
            elif k == "view_of" and u in self.drawn and v in self.drawn:
                self.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2", constraint="false",
                              label=esc(d.get("alias") or "view"), fontcolor="#3d85c6")

    # -- autograd -----------------------------------------------------------------------

    def autograd(self):
        G = self.G
        micro_of = self.steps.micro_of
        step_ops = {n for n, s in self.steps.step_of.items() if self.step is None or (
            s == self.step and (self.micro is None or micro_of.get(n) == self.micro))}
        fns = {n for n, d in G.nodes(data=True) if d.get("kind") == "grad_fn" and d.get("op") in step_ops}
        frontier = list(fns)
        while frontier:  # AccumulateGrad nodes and others made outside an op
            f = frontier.pop()
            for _, g, k in G.out_edges(f, data="kind"):
                gd = G.nodes[g]
                # an AccumulateGrad lives as long as its leaf: made in an earlier step, it serves this one too
                if k == "next" and g not in fns and gd.get("kind") == "grad_fn" and (
                        not gd.get("op") or gd.get("name") == "AccumulateGrad"):
                    fns.add(g)
                    frontier.append(g)
        bws = {d.get("backward") for n in step_ops for d in [G.nodes[n]] if d.get("backward")}
        every = sorted((n for n, d in G.nodes(data=True) if d.get("kind") == "backward"),
                       key=lambda b: G.nodes[b].get("seq", 0))
        order = {b: i for i, b in enumerate(every) if b in bws}  # #k: the program's k-th backward call
        made_by, leaf_of, grads, leaf_grads = {}, {}, {}, {}
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            if k == "grad_fn" and v in fns:
                made_by.setdefault(v, u)
            elif k == "accumulates" and u in fns:
                leaf_of[u] = v
            elif k == "grad" and u in order and d.get("stats"):
                grads.setdefault(G.nodes[v].get("grad_fn"), []).append((order[u], d["stats"]))
            elif k == "leaf_grad" and u in order and d.get("stats"):
                leaf_grads.setdefault(G.nodes[v].get("tid"), []).append((order[u], d["stats"]))
        folded = {}  # grad_fn -> the element that draws it (a collapsed module, or the
        # grad_fn whose label lists a parameter's AccumulateGrad)
        boxes = self.fold_grad_fns(fns, folded)
        for f in sorted(fns, key=lambda x: int(x.split(":")[1]) if x.split(":")[1].isdigit() else 0):
            if f in folded or (G.nodes[f].get("name") == "AccumulateGrad" and leaf_of.get(f)
                               and self.is_param(leaf_of[f])):
                continue
            self.grad_fn_node(f, made_by, leaf_of, grads, leaf_grads, fns, folded)
        for key, members in boxes.items():
            self.grad_fn_box(key, members, leaf_of)
        for b in order:
            self.backward_node(b, order, fns, folded)
        pairs = set()
        for u, v, k in G.edges(data="kind"):
            if k == "next" and u in fns and v in fns:
                a, c = self.drawn_as(u, folded), self.drawn_as(v, folded)
                if a != c and a in self.drawn and c in self.drawn and (a, c) not in pairs:
                    pairs.add((a, c))
                    self.add_edge(a, c)
        if self.saved:
            self.saved_tensors(fns)

    @staticmethod
    def drawn_as(f, folded):
        seen = set()
        while f in folded and f not in seen:
            seen.add(f)
            f = folded[f]
        return f

    def fold_grad_fns(self, fns, folded) -> dict:
        """Fold the grad_fns of ops in collapsed modules (and runs of repeated blocks)
        into one box each, as the forward view does; return {box: [grad_fns]}."""
        G = self.G
        runs = self.runs()
        boxes: dict = {}
        for f in fns:
            mod = G.nodes.get(G.nodes[f].get("op") or "", {}).get("module")
            key = fold.element_of(G, mod, self.depth, runs)
            if key:
                folded[f] = "ag" + key
                boxes.setdefault("ag" + key, []).append(f)
        for f in fns:  # a parameter's AccumulateGrad goes where the grad_fn that feeds it went
            for g in G.successors(f):
                if g in fns and G.nodes[g].get("name") == "AccumulateGrad" and f in folded and g not in folded:
                    folded[g] = folded[f]
                    boxes[folded[f]].append(g)
        return boxes

    def grad_fn_box(self, key, members, leaf_of):
        G = self.G
        accs = [f for f in members if G.nodes[f].get("name") == "AccumulateGrad"]
        path = key[len("agmod:"):] if key.startswith("agmod:") else None
        if path:
            where = path.rsplit(".", 1)[0] if "." in path else None
            head = [path.rsplit(".", 1)[-1], fold.mod_type(G, path)]
        else:
            _, parent, typ, first, last = key[len("ag"):].split(":")
            where = parent
            head = [f"{int(last) - int(first) + 1} × {typ}", f"{parent.rsplit('.', 1)[-1]}.{first}–{last}"]
        label = lines(*head, f"{len(members) - len(accs)} grad_fns", f"{len(accs)} parameter grads" if accs else "")
        self.add_node(key, self.cluster(where), shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label)
        self.counts["ops"] += len(members) - len(accs)
        self.counts["params"] += len(accs)

    def grad_fn_node(self, f, made_by, leaf_of, grads, leaf_grads, fns, folded):
        G = self.G
        d = G.nodes[f]
        op = G.nodes.get(d.get("op") or "", {})
        where, leaf = self.fn_cluster(op.get("module")) if op else (None, None)
        body = [f"{leaf}: {d.get('name')}" if leaf else d.get("name") or "?"]
        if op:
            body.append(f"← {self.where_loc(op)}: {cut(op.get('code'), 30)}")
        t = made_by.get(f) or leaf_of.get(f)
        if t is not None and d.get("name") == "AccumulateGrad":
            body.append(f"{name_of(G.nodes[t])} {shape_text(G.nodes[t].get('shape'))}")
        for i, s in sorted(grads.get(f, [])):
            body.append(f"∇ #{i + 1} {stat(s)}")
        for _, g, k in G.out_edges(f, data="kind"):
            if k != "next" or G.nodes[g].get("name") != "AccumulateGrad" or g not in fns or g in folded:
                continue
            leaf = leaf_of.get(g)
            if leaf is None or not self.is_param(leaf):
                continue
            folded[g] = f
            ld = G.nodes[leaf]
            gs = " ".join(f"#{i + 1} {stat(s)}" for i, s in sorted(leaf_grads.get(ld.get("tid"), [])))
            body.append(f".grad {fold.relative(ld.get('label'), op.get('module'))} {gs}")
            self.counts["params"] += 1
        if t is not None and d.get("name") == "AccumulateGrad":
            gs = " ".join(f"#{i + 1} {stat(s)}" for i, s in sorted(leaf_grads.get(G.nodes[t].get("tid"), [])))
            body.append(f".grad {gs}" if gs else "")
        color = "#d9ead3" if d.get("name") == "AccumulateGrad" else "#cfe2f3"
        self.add_node(f, self.cluster(where), shape="box", style="filled", fillcolor=color, label=lines(*body))
        self.counts["ops"] += 1

    def fn_cluster(self, mod):
        """(the module whose frame holds a grad_fn of an op of ``mod``, the leaf
        module's name to put in its label or None)."""
        if not mod:
            return None, None
        top = fold.collapsed_at(self.G, mod, self.depth)
        if top:
            return top, None
        if not fold.has_children(self.G, mod):  # a leaf module: named in the label, no frame
            return (mod.rsplit(".", 1)[0] if "." in mod else None), mod.rsplit(".", 1)[-1]
        return mod, None

    def backward_node(self, b, order, fns, folded):
        G = self.G
        d = G.nodes[b]
        op = G.nodes.get(d.get("op") or "", {})
        w = ""
        for _, t, e in G.out_edges(b, data=True):
            if e.get("kind") != "weights":
                continue
            root = G.nodes[t]
            w = weighting_text(G, e, d)
            self.add_node(b, shape="doubleoctagon", style="filled", fillcolor="#ead1dc", label=lines(
                f"#{order[b] + 1} {cut(op.get('code') or d.get('api'), 30)}", f"{self.where_loc(op)}", w))
            fn = self.drawn_as(root.get("grad_fn"), folded)
            if fn in self.drawn:
                self.add_edge(b, fn, color="#a64d79", penwidth="2",
                              label=lines(name_of(root), shape_text(root.get("shape"))))
        if b not in self.drawn:
            self.add_node(b, shape="doubleoctagon", style="filled", fillcolor="#ead1dc",
                          label=lines(f"#{order[b] + 1} {d.get('api')}()", w))

    def saved_tensors(self, fns):
        """Each drawn grad_fn's saved tensors: a note beside it, one per tensor it
        saved (parameters and buffers by their short name in one note)."""
        G = self.G
        saves: dict = {}
        for u, v, k in G.edges(data="kind"):
            if k == "saves" and u in fns and u in self.drawn:
                saves.setdefault(u, []).append(v)
        for f, ts in saves.items():
            mod = G.nodes.get(G.nodes[f].get("op") or "", {}).get("module")
            params = [fold.relative(G.nodes[t].get("label"), mod) for t in ts if self.is_param(t)]
            rest = [t for t in ts if not self.is_param(t)]
            text = [f"{name_of(G.nodes[t])} {shape_text(G.nodes[t].get('shape'))}" for t in rest]
            if params:
                text.append(", ".join(params))
            key = ("saved", f)
            self.add_node(key, self.placed.get(f), shape="note", style="filled", fillcolor="#fff2cc", fontsize="8",
                          label=lines("saved:", *text))
            self.add_edge(f, key, style="dotted", arrowhead="none", weight="0")

    # -- memory -------------------------------------------------------------------------

    def memory(self):
        """Storages as columns: each storage a frame holding its tensors, versions
        top to bottom."""
        G = self.G
        touched = set()
        for n in self.ops:
            touched.update(t for t in G.predecessors(n) if G.nodes[t].get("kind") == "tensor")
            touched.update(t for t in G.successors(n) if G.nodes[t].get("kind") == "tensor")
        if not self.ops:
            touched = {n for n, d in G.nodes(data=True) if d.get("kind") == "tensor"}
        by_storage: dict = {}
        for t in touched:
            by_storage.setdefault(G.nodes[t].get("storage"), []).append(t)
        firsts, lasts = [], []
        for s, ts in sorted(by_storage.items(), key=lambda kv: _id_order(kv[0])):
            sd = G.nodes.get(s, {}) if s else {}
            col = pydot.Cluster(self.cluster_name(), **_quoted(dict(
                label=lines(f"{s} {sd.get('device') or ''}", f"{_human(sd.get('nbytes') or 0)}B {sd.get('origin') or ''}"),
                style="filled", fillcolor="#fffbea", color="#d6b656", fontsize="9")))
            self.dot.add_subgraph(col)
            ts = sorted(ts, key=lambda x: (G.nodes[x].get("tid", 0), G.nodes[x].get("version", 0)))
            for t in ts:
                self.tensor_node(t, col)
            firsts.append(ts[0])
            lasts.append(ts[-1])
        for i in range(len(firsts) - MEMORY_COLUMNS):  # columns wrap into rows, not one wide band
            self.add_edge(lasts[i], firsts[i + MEMORY_COLUMNS], style="invis")
        self.counts["tensors"] = len(touched)
        self.counts["storages"] = len(by_storage)
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            if u not in touched or v not in touched:
                continue
            if k == "view_of":
                self.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2",
                              label=esc(d.get("alias") or "view"), constraint="false")
            elif k == "next_version":
                op = G.nodes.get(d.get("op") or "", {})
                label = op_name(op) if op else "external write"
                if not d.get("visible", True):
                    label += " (invisible to autograd)"
                self.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2", label=esc(label))
            elif k == "moved_to":
                self.add_edge(u, v, color="#674ea7", style="bold", constraint="false", label=esc(
                    ("copy " if d.get("copy") else "same tensor ")
                    + f"{d.get('src_device')}/{d.get('src_dtype')}→{d.get('dst_device')}/{d.get('dst_dtype')}"))
        for n, d in G.nodes(data=True):
            if d.get("kind") == "numpy":
                for _, t, k in G.out_edges(n, data="kind"):
                    if k == "shares_memory" and t in touched:
                        self.add_node(n, shape="component", style="filled", fillcolor="#fce5cd", label=lines(
                            f"ndarray {n}", f"{shape_text(d.get('shape'))} {d.get('dtype')}"))
                        self.add_edge(n, t, color="#e69138", dir="both", penwidth="2", label="shares memory")

    # -- title and legend ---------------------------------------------------------------

    def title(self, view):
        G = self.G
        script = Path(G.graph.get("script") or "").name or "traced code"
        if self.step is None:
            where = f"all {self.steps.count} steps" if self.steps.count > 1 else "the whole program"
        else:
            where = f"step {self.step} of {self.steps.count}"
            if self.micro is not None:
                where += f", micro-step {self.micro} of {self.steps.micros[self.step]} (gradient accumulation)"
        phases = "all phases" if set(self.phases) == set(PHASES) else \
            " + ".join(p for p in PHASES if p in self.phases)
        hidden = sum(1 for n in G.nodes if G.nodes[n].get("kind") == "op") - len(self.ops)
        counts = f"{self.counts['ops']} {'autograd nodes' if view == 'autograd' else 'ops'}"
        if view == "memory":
            counts = f"{self.counts.get('tensors', 0)} tensor versions in {self.counts.get('storages', 0)} storages"
        if self.counts["params"]:
            counts += f", {self.counts['params']} parameters folded in"
        if hidden > 0:
            counts += f"; {hidden} ops of other steps/phases hidden (--step, --phase)"
        self.dot.set("label", '"' + lines(f"{script} — {view} — {where} ({phases})", counts).replace('"', '\\"') + '"')
        self.dot.set("labelloc", "t")
        self.dot.set("fontsize", "12")

    def legend(self, view):
        rows = []
        if view in ("forward", "all"):
            rows += [("compute op", CATEGORY_COLORS["compute"], "box"), ("view op", CATEGORY_COLORS["view"], "box"),
                     ("in-place write", CATEGORY_COLORS["inplace"], "box"),
                     ("folded module / line", FOLDED_FILL, "box3d")]
            if not self.tensors:
                rows.append(("edge: tensor, by shape", "#ffffff", "edge"))
        if view in ("autograd", "all"):
            rows += [("grad_fn (∇ #k: grad norm in call k)", "#cfe2f3", "box"),
                     ("backward call", "#ead1dc", "doubleoctagon")]
        if view in ("memory", "all"):
            rows += [("storage: a column of the tensors in it", "#fffbea", "box"),
                     ("tensor version (red fill: written)", "#fde9d9", "box")]
        if self.codes_drawn:
            rows.append(("⚠ CODE: gradtrace check finding", "#ffffff", "mark"))
        cells = ""
        for text, color, kind in rows:
            border = f' COLOR="{MARK_COLOR}"' if kind == "mark" else ""
            sample = "→" if kind == "edge" else "&nbsp;"
            cells += (f'<TR><TD BGCOLOR="{color}" BORDER="1"{border}>{sample}</TD>'
                      f'<TD ALIGN="LEFT">{_html(text)}</TD></TR>')
        label = f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2"><TR><TD COLSPAN="2"><B>legend</B></TD></TR>{cells}</TABLE>>'
        legend = pydot.Cluster("legend", label='""', style="invis")
        legend.add_node(pydot.Node("legend", shape="plaintext", fontsize="8", label=label))
        self.dot.add_subgraph(legend)


def weighting_text(G, e, bw) -> str:
    """What a backward call weighted its root by: ``w = 1 (implicit)``, the number
    passed, or the weighting tensor by its summary (values when it is small)."""
    w = e.get("gradient")
    if w is None:
        if bw.get("implicit"):
            return "w = 1 (implicit)"
        if e.get("gradient_value") is not None:
            return f"w = {e['gradient_value']}"
        r = (e.get("received") or {}).get("stats")
        return f"w {stat(r)}" if r else "w"
    wd = G.nodes.get(w, {})
    s = wd.get("stats") or {}
    shape = wd.get("shape")
    if shape is not None and _numel(shape) == 1 and s.get("mean") is not None:
        return f"w = {name_of(wd)} = {s['mean']:.4g}"
    if s.get("min") is not None and s.get("min") == s.get("max"):
        return f"w = {name_of(wd)}: {shape_text(shape)} all {s['min']:.4g}"
    return f"w = {name_of(wd)}: {shape_text(shape)} {stat(s)}" + (
        f" [{s['min']:.3g}, {s['max']:.3g}]" if s.get("min") is not None else "")


def _id_order(node):
    """Sort key of a node id (``s:10`` after ``s:9``)."""
    head, _, tail = str(node).partition(":")
    return (head, int(tail) if tail.isdigit() else 0, str(node))


def _html(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _numel(shape) -> int:
    n = 1
    for s in shape or ():
        n *= int(s) if isinstance(s, int) else 1
    return n


def _human(n) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def build(G, view="forward", depth=DEFAULT_DEPTH, highlight=None, step=None, phase=None, tensors=False,
          saved=False, findings=None, legend=True) -> pydot.Dot:
    """Return the pydot graph of one view of trace ``G``. ``highlight``: nodes to
    outline (a set, or {node: [finding codes]}); ``findings``: findings of
    ``gradtrace.check`` whose nodes are outlined with their codes. Raises
    ``ValueError`` for an unknown view, phase or step."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)}")
    p = Picture(G, depth, step, phase, tensors, saved, marks_of(highlight, findings))
    if view in ("forward", "all"):
        p.forward()
    if view in ("autograd", "all"):
        p.autograd()
    if view in ("memory", "all"):
        p.memory()
    p.title(view)
    if legend:
        p.legend(view)
    return p.dot


def count_elements(G, depth=DEFAULT_DEPTH, step=None, phase=None) -> int:
    """Return how many op elements (ops, folded modules, runs, folded lines) the
    forward view of ``G`` draws with these options, without making its DOT text:
    what decides whether a drawing is small enough to lay out."""
    p = Picture(G, depth, step, phase)
    _, info = p.owners()
    return len(info)


def marks_of(highlight, findings) -> dict:
    """{node: [codes]} from a highlight set or dict and findings (read defensively:
    any object with ``code`` and ``nodes``)."""
    marks: dict = {}
    if isinstance(highlight, dict):
        for n, codes in highlight.items():
            marks.setdefault(n, []).extend(codes or ())
    else:
        for n in highlight or ():
            marks.setdefault(n, [])
    for f in findings or ():
        code = getattr(f, "code", None) or (f.get("code") if isinstance(f, dict) else None) or "finding"
        nodes = getattr(f, "nodes", None) or (f.get("nodes") if isinstance(f, dict) else None) or ()
        for n in nodes:
            if code not in marks.setdefault(n, []):
                marks[n].append(code)
    return marks
