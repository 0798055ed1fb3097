"""The canvas every static view draws on: a :class:`Picture` holds one view of a trace
being drawn into a pydot graph (node ids, module frames, ``no_grad`` frames, nodes,
edges, the title and the legend), and the label helpers the views share.

Data flows top to bottom. The views themselves are :mod:`.forward`, :mod:`.autograd`
and :mod:`.memory`; :func:`gradtrace.views.dot.build` puts them together.
"""

from __future__ import annotations

from pathlib import Path

import pydot

from ..graph.names import name_of
from . import fold
from .steps import PHASES, find_steps, parse_phases, select_ops

__all__ = [
    "CATEGORY_COLORS", "DEFAULT_DEPTH", "FOLDED_FILL", "LABEL_CODE_CHARS", "MARK_COLOR", "MEMORY_COLUMNS",
    "WRITE_CATEGORIES", "Picture", "cut", "esc", "human", "lines", "op_name", "shape_text", "stat",
]

DEFAULT_DEPTH = 3

CATEGORY_COLORS = {
    "factory": "#d9ead3", "compute": "#cfe2f3", "view": "#fff2cc", "inplace": "#f4cccc",
    "out": "#f4cccc", "setitem": "#f4cccc", "move": "#d9d2e9", "convert": "#d9d2e9",
    "numpy": "#fce5cd", "backward": "#ead1dc", "grad_mode": "#eeeeee", "step": "#eeeeee", "collective": "#b6d7a8",
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
    """Return text from the trace as one line of a DOT label (a backslash stays a backslash)."""
    return str(text).replace("\\", "\\\\").translate(_CONTROLS)


def lines(*parts) -> str:
    """Return a DOT label of several lines, each escaped (empty parts are left out)."""
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
    """Return a tensor shape as a label reads it: ``4×8``, ``scalar``, or ``?`` when unknown."""
    if shape is None:
        return "?"
    return "×".join(str(s) for s in shape) if shape else "scalar"


def cut(code: str, n: int = LABEL_CODE_CHARS) -> str:
    """Return ``code`` in at most ``n`` characters, cut at a word or bracket boundary with …"""
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
    """Return an op's name as a label reads it (``F.linear``, ``.add_``, ``matmul``)."""
    return (d.get("name") or "?").replace("torch.nn.functional.", "F.").replace("torch.", "").replace(
        "Tensor.", ".")


def stat(s) -> str:
    """Return a tensor's summary as a label reads it (``‖1.23‖``, its norm), or ``""``."""
    return f"‖{s['norm']:.3g}‖" if s and s.get("norm") is not None else ""


def human(n) -> str:
    """Return a count in a few characters: ``1.5M``, ``12k``, ``800``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _html(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Picture:
    """One view of a trace being drawn into a pydot graph: the ops it shows, the ids,
    frames, nodes and edges drawn so far, and what they count."""

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
        # no_grad regions: the forward view sets them (Forward.regions), other views have none
        self.region_label, self.module_region = {}, {}
        self.ids: dict = {}
        self.dot = pydot.Dot("gradtrace", graph_type="digraph", rankdir="TB", fontname="Helvetica",
                             fontsize="11", compound="true", newrank="true", ranksep="0.3", nodesep="0.25")
        self.dot.set_node_defaults(fontname="Helvetica", fontsize="10", margin="0.08,0.03", height="0.3")
        self.dot.set_edge_defaults(fontname="Helvetica", fontsize="8", arrowsize="0.6", color="#555555")
        self.clusters: dict = {}
        self.n_clusters = 0
        self.drawn: set = set()
        self.codes_drawn: dict = {}
        self.placed: dict = {}  # drawn element -> the subgraph holding it
        self.counts = {"ops": 0, "params": 0}

    # -- elements -----------------------------------------------------------------------

    def nid(self, node) -> str:
        """Return the DOT id of ``node`` (``n0``, ``n1``, ... in the order first asked)."""
        i = self.ids.get(node)
        if i is None:
            i = self.ids[node] = f"n{len(self.ids)}"
        return i

    def cluster(self, path):
        """Return the pydot subgraph that draws module ``path`` (None: the graph itself)."""
        if path is None:
            return self.dot
        c = self.clusters.get(path)
        if c is None:
            parent = path.rsplit(".", 1)[0] if "." in path else None
            # a root module by the variable the user called it through (`model`, `teacher`)
            name = path.rsplit(".", 1)[-1] if parent else fold.user_path(self.G, path)
            outer = self.cluster(parent) if parent else self.module_frame(path)
            c = self.frame(outer, label=esc(f"{name} · {fold.mod_type(self.G, path)}"), style="rounded",
                           color="#aaaaaa", fontsize="9", fontcolor="#555555", labeljust="l")
            self.clusters[path] = c
        return c

    def frame(self, outer, **attrs):
        """Return a new frame (a pydot cluster with ``attrs``) drawn inside ``outer``."""
        c = pydot.Cluster(self.cluster_name(), **_quoted(attrs))
        outer.add_subgraph(c)
        return c

    def cluster_name(self) -> str:
        """Return a new cluster's name (``c1``, ``c2``, ...)."""
        self.n_clusters += 1
        return f"c{self.n_clusters}"

    def where_loc(self, d) -> str:
        """Return where op ``d`` is in the source (``line 12``, ``train.py:12`` with
        several files), or ``""``."""
        if not d.get("line"):
            return ""
        f = f"{Path(d['file']).name}:" if self.several_files and d.get("file") else "line "
        return f"{f}{d['line']}"

    def add_node(self, key, where=None, codes=(), **attrs):
        """Draw element ``key`` once, in frame ``where`` (None: the graph), outlined
        with the finding ``codes`` it has."""
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
        """Draw an edge from element ``u`` to element ``v``."""
        self.dot.add_edge(pydot.Edge(self.nid(u), self.nid(v), **_quoted(attrs)))

    def tensor_node(self, n, where=None, codes=()):
        """Draw tensor ``n`` as a node (name, version, shape, dtype) in frame ``where``."""
        d = self.G.nodes[n]
        written = (d.get("version") or 0) > 0
        self.add_node(n, where, codes, label=lines(name_of(d) + (f" v{d['version']}" if written else ""),
                                                   f"{shape_text(d.get('shape'))} {d.get('dtype') or ''}"),
                      shape="ellipse", style="filled", fillcolor="#fde9d9" if written else "#f3f3f3",
                      fontsize="9")

    def region_frame(self, key):
        """Return the dashed frame of ``no_grad`` region ``key``, or None for no region."""
        if key is None:
            return None
        c = self.clusters.get(key)
        if c is None:
            c = self.frame(self.dot, label=esc(self.region_label.get(key, "no_grad")), style="dashed",
                           color="#777777", fontsize="9", fontcolor="#777777", labeljust="l")
            self.clusters[key] = c
        return c

    def module_frame(self, root):
        """Return the ``no_grad`` frame a root module's cluster sits in, or the graph:
        every op of its call ran inside one region of the user's (``with
        torch.no_grad(): target = teacher(x)``)."""
        return self.region_frame(self.module_region.get(root)) or self.dot

    def is_param(self, t) -> bool:
        """Return whether tensor ``t`` is a module's parameter or buffer."""
        return bool(self.G.nodes[t].get("param_of"))

    def runs(self) -> dict:
        """Return the runs of repeated blocks to fold: at the default depth or less (a
        deeper ``depth`` draws every block)."""
        if self.depth > DEFAULT_DEPTH:
            return {}
        return fold.runs_among(self.G, {self.G.nodes[n].get("module") for n in self.ops})

    # -- title and legend ---------------------------------------------------------------

    def title(self, view):
        """Set the graph's title: the script, the view, the step and phases drawn, and
        what was drawn and hidden."""
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

    def legend(self, view, notes=()):
        """Draw the legend of ``view``: a table of what its shapes and colours mean, and
        ``notes`` (lines of text: the step's costs) under it."""
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
        for text in notes:
            cells += f'<TR><TD COLSPAN="2" ALIGN="LEFT">{_html(text)}</TD></TR>'
        label = f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2"><TR><TD COLSPAN="2"><B>legend</B></TD></TR>{cells}</TABLE>>'
        legend = pydot.Cluster("legend", label='""', style="invis")
        legend.add_node(pydot.Node("legend", shape="plaintext", fontsize="8", label=label))
        self.dot.add_subgraph(legend)
