"""Draw a trace graph as DOT (through pydot), and render it with Graphviz.

Views (trace format): ``forward`` (ops and the tensors between them),
``autograd`` (grad_fn nodes, backward calls and the gradients they sent),
``memory`` (tensors, storages, views, versions, numpy sharing, moves) and ``all``.
Modules deeper than ``depth`` collapse into one node each, so large models stay
readable; every module that is drawn gets a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx
import pydot

VIEWS = ("forward", "autograd", "memory", "all")
DEFAULT_DEPTH = 3

CATEGORY_COLORS = {
    "factory": "#d9ead3",
    "compute": "#cfe2f3",
    "view": "#fff2cc",
    "inplace": "#f4cccc",
    "out": "#f4cccc",
    "setitem": "#f4cccc",
    "move": "#d9d2e9",
    "convert": "#d9d2e9",
    "numpy": "#fce5cd",
    "backward": "#ead1dc",
    "grad_mode": "#eeeeee",
    "collective": "#b6d7a8",
    "other": "#ffffff",
}
WRITE_CATEGORIES = {"inplace", "out", "setitem"}


class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is not installed."""


# Control characters (C0 and DEL) are shown as their Unicode pictures (U+2400...):
# Graphviz rejects most of them, and a label must say what is in the trace.
_CONTROLS = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421}
_CONTROLS[ord("\n")] = _CONTROLS[ord("\r")] = _CONTROLS[ord("\t")] = ord(" ")


def _esc(text) -> str:
    """Text from the trace, escaped for a DOT label (a backslash stays a backslash)."""
    return str(text).replace("\\", "\\\\").translate(_CONTROLS)


_QUOTED = ("label", "tooltip")


def _quoted(attrs: dict) -> dict:
    """``attrs`` with the label and tooltip given to pydot already quoted: pydot passes a
    value that looks quoted (``"..."``) or like HTML (``<...>``) through as it is, so a
    label from the trace could otherwise break out of its string."""
    for k in _QUOTED:
        v = attrs.get(k)
        if isinstance(v, str):
            attrs[k] = '"' + v.replace('"', '\\"').replace("\n", "\\n") + '"'
    return attrs


def _short_shape(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "scalar"


def _tensor_label(d: dict) -> str:
    name = d.get("label") or f"t{d['tid']}"
    head = f"{_esc(name)} v{d['version']}" if d.get("version") else _esc(name)
    return f"{head}\\n{_short_shape(d.get('shape'))} {_esc(d.get('dtype'))}" + (
        f" {_esc(d['device'])}" if d.get("device") not in (None, "cpu") else ""
    )


def _op_label(d: dict) -> str:
    name = d["name"].replace("torch.nn.functional.", "F.").replace("torch.", "")
    loc = f"\\nline {d['line']}" if d.get("line") else ""
    return f"{_esc(name)}{loc}"


def _depth_of(path: str | None) -> int:
    return 0 if not path else path.count(".") + 1


def _truncate(path: str, depth: int) -> str:
    return ".".join(path.split(".")[:depth])


class _Drawer:
    def __init__(self, G, view, depth, highlight):
        self.G = G
        self.view = view
        self.depth = depth
        self.highlight = set(highlight or ())
        self.ids: dict = {}
        self.dot = pydot.Dot("gradtrace", graph_type="digraph", rankdir="TB", fontname="Helvetica",
                             fontsize="10", compound="true")
        self.dot.set_node_defaults(fontname="Helvetica", fontsize="10")
        self.dot.set_edge_defaults(fontname="Helvetica", fontsize="9")
        self.clusters: dict = {}
        self.drawn: set = set()

    def nid(self, node) -> str:
        i = self.ids.get(node)
        if i is None:
            i = self.ids[node] = f"n{len(self.ids)}"
        return i

    def cluster(self, path):
        if path is None:
            return self.dot
        c = self.clusters.get(path)
        if c is None:
            parent = self.cluster(path.rsplit(".", 1)[0]) if "." in path else self.dot
            mod = self.G.nodes.get(f"mod:{path}", {})
            c = pydot.Cluster(f"c{len(self.clusters)}", **_quoted(dict(
                label=_esc(f"{path} ({mod.get('type', '?')})"), style="rounded", color="#999999", fontsize="9")))
            parent.add_subgraph(c)
            self.clusters[path] = c
        return c

    def add_node(self, node, where=None, **attrs):
        if node in self.drawn:
            return
        self.drawn.add(node)
        if node in self.highlight:
            attrs.update(penwidth="3", color="#cc0000")
        (where or self.dot).add_node(pydot.Node(self.nid(node), **_quoted(attrs)))

    def add_edge(self, u, v, **attrs):
        self.dot.add_edge(pydot.Edge(self.nid(u), self.nid(v), **_quoted(attrs)))

    def tensor(self, n, where=None):
        d = self.G.nodes[n]
        written = d.get("version", 0) > 0
        self.add_node(n, where, label=_tensor_label(d), shape="ellipse",
                      style="filled", fillcolor="#fde9d9" if written else "#f3f3f3")

    # -- forward ------------------------------------------------------------------------

    def forward(self):
        G = self.G
        owner = {}  # op -> drawn element (the op, or the collapsed module or line it is in)
        lines = {}  # collapsed line -> (attrs of its first op, number of ops)
        for n, d in G.nodes(data=True):
            if d.get("kind") != "op":
                continue
            mod = d.get("module")
            if not mod and d.get("direct") is False and d.get("line"):
                # Library code working for one line of the user's (the parameter
                # initialisation inside `nn.Linear(...)`): one node for that line.
                key = f"line:{d['file']}:{d['line']}"
                owner[n] = key
                first, count = lines.get(key, (d, 0))
                lines[key] = (first, count + 1)
            elif mod and _depth_of(mod) > self.depth:
                top = _truncate(mod, self.depth)
                owner[n] = f"mod:{top}"
                if owner[n] not in self.drawn:
                    parent = top.rsplit(".", 1)[0] if "." in top else None
                    m = G.nodes.get(f"mod:{top}", {})
                    self.add_node(owner[n], self.cluster(parent), shape="box3d", style="filled",
                                  fillcolor="#e6e6e6", label=f"{_esc(top)}\\n({_esc(m.get('type', 'module'))})")
            else:
                owner[n] = n
                cat = d.get("category", "other")
                attrs = dict(label=_op_label(d), shape="box", style="filled,rounded",
                             fillcolor=CATEGORY_COLORS.get(cat, "#ffffff"), tooltip=_esc(d.get("code") or ""))
                if cat in WRITE_CATEGORIES:
                    attrs.update(penwidth="2", color="#cc0000")
                if d.get("error"):
                    attrs.update(penwidth="3", color="#cc0000", style="filled,bold")
                self.add_node(n, self.cluster(mod), **attrs)
        for key, (d, count) in lines.items():
            code = d.get("code") or ""
            self.add_node(key, shape="box3d", style="filled", fillcolor="#e6e6e6",
                          label=f"line {d['line']}: {_esc(code[:40])}\n({count} ops)",
                          tooltip=_esc(code))
        producers, consumers = {}, {}  # tensor -> drawn elements writing / reading it
        io = []
        for u, v, k in G.edges(data="kind"):
            if k == "output" and u in owner:
                producers.setdefault(v, set()).add(owner[u])
                io.append((owner[u], v, True))
            elif k == "input" and v in owner:
                consumers.setdefault(u, set()).add(owner[v])
                io.append((u, owner[v], False))
        seen_pairs = set()
        for a, b, is_output in io:
            t, elem = (b, a) if is_output else (a, b)
            if G.nodes[t].get("kind") != "tensor":
                continue
            if elem.startswith(("mod:", "line:")):
                # a tensor made and used only inside one collapsed element stays hidden
                others = consumers.get(t, set()) if is_output else producers.get(t, set())
                if others == {elem}:
                    continue
            self.tensor(t)
            if (a, b) not in seen_pairs:
                seen_pairs.add((a, b))
                self.add_edge(a, b)
        # Writes and aliases, drawn so they stand out; a write through a view
        # also shows the base's new version, though no op outputs it.
        for u, v, d in sorted(G.edges(data=True), key=lambda e: e[2].get("kind") != "next_version"):
            k = d.get("kind")
            if k == "next_version" and u in self.drawn and not d.get("metadata_only"):
                self.tensor(v)
                self.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2",
                              label="write" if d.get("visible", True) else "hidden write",
                              fontcolor="#cc0000")
            elif k == "view_of" and u in self.drawn and v in self.drawn:
                self.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2",
                              label=_esc(d.get("alias") or "view"), fontcolor="#3d85c6", constraint="false")
            elif k == "moved_to" and u in self.drawn and v in self.drawn and u != v:
                self.add_edge(u, v, color="#674ea7", style="bold",
                              label=_esc(f"{d.get('src_device')}→{d.get('dst_device')}"
                                         if d.get("src_device") != d.get("dst_device")
                                         else f"{d.get('src_dtype')}→{d.get('dst_dtype')}"),
                              constraint="false")

    # -- autograd -----------------------------------------------------------------------

    def autograd(self):
        G = self.G
        grad_of = {}
        for u, v, d in G.edges(data=True):
            if d.get("kind") == "grad" and d.get("stats"):
                grad_of[v] = d["stats"]
        made_by = {}
        for n, d in G.nodes(data=True):
            if d.get("kind") == "tensor" and d.get("grad_fn"):
                made_by.setdefault(d["grad_fn"], n)
        for n, d in G.nodes(data=True):
            k = d.get("kind")
            if k == "grad_fn":
                label = _esc(d["name"])
                t = made_by.get(n)
                if t is not None:
                    td = G.nodes[t]
                    label += f"\\n→ {_esc(td.get('label') or 't' + str(td['tid']))}"
                    if t in grad_of:
                        label += f"\\ngrad norm {grad_of[t]['norm']:.4g}"
                self.add_node(n, shape="box", style="filled",
                              fillcolor="#d9ead3" if d["name"] == "AccumulateGrad" else "#cfe2f3",
                              label=label)
            elif k == "backward":
                self.add_node(n, shape="doubleoctagon", style="filled", fillcolor="#ead1dc",
                              label=_esc(f"{d['api']}() #{d['seq']}" + (" (implicit)" if d.get("implicit") else "")))
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            if k == "next":
                self.add_edge(u, v)
            elif k == "accumulates":
                self.tensor(v)
                self.add_edge(u, v, style="dashed")
            elif k == "leaf_grad" and d.get("stats"):
                self.tensor(v)
                self.add_edge(u, v, color="#6aa84f", style="dashed", constraint="false",
                              label=f".grad norm {d['stats']['norm']:.4g}")
            elif k == "weights":
                self.tensor(v)
                w = d.get("gradient")
                label = "w = 1 (implicit)" if w is None and G.nodes[u].get("implicit") else (
                    f"w = {_esc(G.nodes[w].get('label') or w)}" if w else "w")
                self.add_edge(u, v, color="#a64d79", penwidth="2", label=label)
                fn = G.nodes[v].get("grad_fn")
                if fn:
                    self.add_edge(v, fn, style="dotted")

    # -- memory -------------------------------------------------------------------------

    def memory(self):
        G = self.G
        for n, d in G.nodes(data=True):
            k = d.get("kind")
            if k == "tensor":
                self.tensor(n)
            elif k == "storage":
                self.add_node(n, shape="box3d", style="filled", fillcolor="#fff2cc",
                              label=f"{_esc(n)} {_esc(d.get('device'))}\\n{d.get('nbytes')} B {_esc(d.get('origin'))}")
            elif k == "numpy":
                self.add_node(n, shape="component", style="filled", fillcolor="#fce5cd",
                              label=f"ndarray {_esc(n)}\\n{_short_shape(d.get('shape'))} {_esc(d.get('dtype'))}")
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            if k == "in_storage":
                self.add_edge(u, v, color="#999999", arrowhead="none")
            elif k == "view_of":
                self.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2",
                              label=_esc(d.get("alias") or "view"))
            elif k == "next_version":
                op = G.nodes.get(d.get("op") or "", {})
                label = op.get("name", "external write") if op else "external write"
                if not d.get("visible", True):
                    label += " (invisible to autograd)"
                self.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2", label=_esc(label))
            elif k == "shares_memory":
                self.add_edge(u, v, color="#e69138", dir="both", penwidth="2", label="shares memory")
            elif k == "moved_to":
                self.add_edge(u, v, color="#674ea7", style="bold",
                              label=_esc(("copy " if d.get("copy") else "same tensor ") +
                                         f"{d.get('src_device')}/{d.get('src_dtype')}→{d.get('dst_device')}/{d.get('dst_dtype')}"))


def to_pydot(G: nx.MultiDiGraph, view: str = "forward", depth: int = DEFAULT_DEPTH,
             highlight=None) -> pydot.Dot:
    """Return the pydot graph of one view of a trace; ``highlight`` names nodes to mark."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)}")
    d = _Drawer(G, view, depth, highlight)
    if view in ("forward", "all"):
        d.forward()
    if view in ("autograd", "all"):
        d.autograd()
    if view in ("memory", "all"):
        d.memory()
    return d.dot


def to_dot(G: nx.MultiDiGraph, view: str = "forward", depth: int = DEFAULT_DEPTH, highlight=None) -> str:
    """Return DOT text for one view of a trace."""
    return to_pydot(G, view, depth, highlight).to_string()


def have_graphviz() -> bool:
    """True when Graphviz's ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


class RenderError(RuntimeError):
    """Graphviz could not draw a DOT text, or the drawing could not be written; the
    message is one line."""


def render(dot_text: str, fmt: str = "svg", timeout: float = 120) -> bytes:
    """Render DOT text with Graphviz and return the image bytes.

    Raises :class:`GraphvizMissing` when ``dot`` is not installed, and
    :class:`RenderError` (one line) when it fails or runs past ``timeout`` seconds."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz's 'dot' is not installed (apt-get install graphviz); "
                              "SVG and PNG need it, DOT text does not")
    try:
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz's dot did not finish drawing in {timeout:g} s") from None
    except OSError as e:
        raise RenderError(f"Graphviz's dot could not be run ({e.strerror or e})") from None
    if r.returncode != 0:
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed (exit {r.returncode})" + (f": {lines[-1].strip()}" if lines else ""))
    return r.stdout


def render_to_file(dot_text: str, fmt: str, path) -> Path:
    """Render DOT text with Graphviz into the file ``path``; return its path.

    Raises :class:`GraphvizMissing`, or :class:`RenderError` (one line) when Graphviz
    fails or the file cannot be written."""
    data = render(dot_text, fmt)
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise RenderError(f"cannot write {path} ({e.strerror or e})") from None
    return Path(path)


def render_svg(G, view: str = "forward", depth: int = DEFAULT_DEPTH):
    """Return the SVG text of a view, or None when Graphviz is missing."""
    if not have_graphviz():
        return None
    return render(to_dot(G, view, depth), "svg").decode("utf-8")
