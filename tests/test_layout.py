"""The package is layered, each layer a folder, every import pointing down:

    record -> graph -> views | analyze -> trace, runner, outputs, ranks -> replay -> cli

read from the source (ast: imports inside functions count), so a back-import fails the
suite. docs/architecture.md says what lives where."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gradtrace"

# Lowest first. Modules of one layer may import each other; `views` and `analyze` are
# one level, side by side, and never import each other.
LAYERS = [
    ("record",),
    ("graph",),
    ("views", "analyze"),
    ("trace", "runner", "outputs", "ranks", "progress", "pytest_plugin"),
    ("replay",),
    ("cli", "__main__"),
]
LEVEL = {part: i for i, parts in enumerate(LAYERS) for part in parts}
APART = {("views", "analyze"), ("analyze", "views")}


def _modules() -> dict:
    """``{module name: path}`` for every module of the package."""
    out = {}
    for p in PKG.rglob("*.py"):
        if "vendor" in p.parts:
            continue
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _targets(name: str, node) -> list:
    """The package's modules an import statement of module ``name`` reaches."""
    if isinstance(node, ast.Import):
        cands = [a.name for a in node.names]
    else:
        if node.level:
            base = name.split(".")
            if not MODULES[name].name == "__init__.py":
                base = base[:-1]
            base = base[: len(base) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        cands = [mod] + [f"{mod}.{a.name}" for a in node.names]
    return [c for c in cands if c in MODULES and c != name]


def _imports() -> dict:
    """``{module: {(imported module, line, name imported)}}``, imports in functions included."""
    out = {}
    for name, path in MODULES.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = tuple(a.name for a in node.names) if isinstance(node, ast.ImportFrom) else ()
                for t in _targets(name, node):
                    found.add((t, node.lineno, names))
        out[name] = found
    return out


IMPORTS = _imports()


def _layer(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_import_points_down_the_layers():
    wrong = []
    for m, found in IMPORTS.items():
        a = _layer(m)
        for t, line, _ in found:
            b = _layer(t)
            if a is None or b is None or a == b:
                continue
            if LEVEL[b] > LEVEL[a] or (a, b) in APART:
                wrong.append(f"{m}:{line} imports {t}")
    assert wrong == []


def test_every_module_is_in_a_layer():
    assert sorted(m for m in MODULES if m != "gradtrace" and _layer(m) not in LEVEL) == []


@pytest.mark.parametrize("reader", ["gradtrace.graph.io", "gradtrace.graph.schema", "gradtrace.views",
                                    "gradtrace.analyze"])
def test_reading_a_trace_never_imports_the_recorder(reader):
    """Loading, drawing and analysing a saved trace need nothing of the recorder."""
    reach, todo = set(), [m for m in MODULES if m == reader or m.startswith(reader + ".")]
    while todo:
        m = todo.pop()
        if m in reach:
            continue
        reach.add(m)
        todo += [t for t, _, _ in IMPORTS[m]]
    assert sorted(m for m in reach if m.startswith("gradtrace.record")) == []


def test_no_import_circle_between_modules():
    index, low, stack, on, circles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in {t for t, _, _ in IMPORTS[v] if not v.startswith(t + ".")}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    assert circles == []


def test_no_module_imports_another_modules_private_name():
    wrong = []
    for m, found in IMPORTS.items():
        for t, line, names in found:
            private = [n for n in names if n.startswith("_") and n != "__version__" and f"{t}.{n}" not in MODULES]
            if private:
                wrong.append(f"{m}:{line} imports {', '.join(private)} from {t}")
    assert wrong == []


def _sizes():
    for name, path in MODULES.items():
        src = path.read_text(encoding="utf-8")
        yield "module", name, src.count("\n"), 600
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef):
                yield "class", f"{name}.{node.name}", node.end_lineno - node.lineno + 1, 400
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield "function", f"{name}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1, 120


def test_no_module_over_600_lines_class_over_400_or_function_over_120():
    assert [f"{kind} {what}: {n} lines" for kind, what, n, limit in _sizes() if n > limit] == []


def test_at_most_12_modules_at_the_top_level():
    top = sorted(m for m in MODULES if m.count(".") == 1 and not (PKG / m.split(".")[1]).is_dir())
    assert len(top) <= 12, top


def test_every_module_says_what_it_exports():
    missing = [m for m, p in MODULES.items()
               if p.name not in ("__init__.py", "__main__.py") and "__all__" not in p.read_text(encoding="utf-8")]
    assert missing == []


_READ_A_TRACE = """
import sys
import gradtrace
from gradtrace.cli import main
tr = gradtrace.load(sys.argv[1])
gradtrace.check(tr)
for args in (["show", sys.argv[1]], ["show", "--summary", sys.argv[1]], ["check", sys.argv[1]]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("gradtrace.record")))
"""


def test_reading_a_trace_imports_neither_torch_nor_the_recorder(tmp_path):
    """``gradtrace show`` and ``check`` of a saved trace start in a fraction of a second:
    importing torch alone takes seconds."""
    import subprocess
    import sys

    import torch

    import gradtrace

    with gradtrace.trace() as tr:
        (torch.ones(3, requires_grad=True) * 2).sum().backward()
    tr.save(tmp_path / "t")
    out = subprocess.run([sys.executable, "-c", _READ_A_TRACE, str(tmp_path / "t")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
