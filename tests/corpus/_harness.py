"""Run one corpus program, untraced or under ``gradtrace.trace``, and write what it did.

    python tests/corpus/_harness.py PROGRAM MODE OUTJSON      # MODE: untraced|none|stats|all

The program runs as ``python PROGRAM`` would run it: as ``__main__`` in a fresh module,
``sys.argv == [PROGRAM]``, its folder first on ``sys.path``. Its stdout and stderr
are passed through and also captured; an exception it raises is caught and recorded.
OUTJSON then holds:

* ``stdout``, ``stderr``: the captured text;
* ``exception``: ``{"type", "message"}`` or null (``SystemExit`` with code 0/None is
  not an exception);
* ``digests``: name -> ``{"dtype", "shape", "sha256"}`` (bit-exact) for every tensor,
  numpy array, ``nn.Module`` (state_dict with buffers, and each parameter's ``.grad``),
  optimizer and LR scheduler state found in the program's globals (also one level down
  in lists, tuples and dicts);
* ``alive``: the names of those tensors/modules/optimizers still alive, by weak
  reference, after the program's globals are cleared and dropped and ``gc.collect()``
  ran (the trace object itself is kept alive meanwhile);
* ``trace`` (traced modes): status, error type/message, whether ``tr.graph`` builds
  (and its op count) and whether ``tr.save`` writes a loadable folder; with
  ``values="stats"`` also ``views``: the findings of ``gradtrace.check`` and the title
  and box count of the default picture.

The harness exits 0 whenever it could write OUTJSON, whatever the program did.
"""

from __future__ import annotations

import builtins
import gc
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import time
import traceback
import types
import weakref

MODES = ("untraced", "none", "stats", "all")


class Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and keeps a copy."""

    def __init__(self, stream):
        self._stream = stream
        self._copy = io.StringIO()

    def write(self, s):
        self._copy.write(s)
        return self._stream.write(s)

    def flush(self):
        self._stream.flush()

    def getvalue(self) -> str:
        return self._copy.getvalue()

    def fileno(self):
        return self._stream.fileno()

    def isatty(self):
        return False

    @property
    def encoding(self):
        return self._stream.encoding

    @property
    def errors(self):
        return self._stream.errors

    def writable(self):
        return True


def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


# -- digests ----------------------------------------------------------------------------


def _tensor_digest(t) -> dict:
    import torch

    # A subclass's __torch_function__ must not see (or log) the harness's reads.
    with torch._C.DisableTorchFunctionSubclass(), torch.no_grad():
        d = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
        if t.is_sparse or t.layout != torch.strided:
            t = t.to_dense()
        if t.device.type == "meta":
            d["sha256"] = "meta"
            return d
        flat = t.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)
        d["sha256"] = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
    return d


def _plain(v):
    """A JSON-able, process-independent rendering of a non-tensor state value."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return repr(v)  # exact, and keeps nan/inf
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return f"<{type(v).__name__}>"  # functions, objects: their repr holds addresses


def _state_digests(prefix: str, state, out: dict):
    """Digest a nested state (dicts/lists of tensors and plain values)."""
    import torch

    if isinstance(state, torch.Tensor):
        out[prefix] = _tensor_digest(state)
    elif isinstance(state, dict):
        for k, v in state.items():
            _state_digests(f"{prefix}.{k}", v, out)
    elif isinstance(state, (list, tuple)) and any(isinstance(x, (torch.Tensor, dict)) for x in state):
        for i, v in enumerate(state):
            _state_digests(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = {"value": _plain(state)}


def _trackable(v) -> bool:
    import torch

    return isinstance(v, (torch.Tensor, torch.nn.Module, torch.optim.Optimizer))


def _objects(g: dict):
    """(name, object) for the tensors, arrays, modules, optimizers and schedulers in a
    program's globals, also one level down in lists, tuples and dicts."""
    import numpy as np
    import torch

    sched = getattr(torch.optim.lr_scheduler, "LRScheduler", torch.optim.lr_scheduler._LRScheduler)
    kinds = (torch.Tensor, np.ndarray, torch.nn.Module, torch.optim.Optimizer, sched)
    for name, v in sorted(g.items()):
        if name.startswith("__") or isinstance(v, (type, types.ModuleType, types.FunctionType)):
            continue
        if isinstance(v, kinds):
            yield name, v
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if isinstance(x, kinds):
                    yield f"{name}[{i}]", x
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, kinds):
                    yield f"{name}[{k!r}]", x


def digests(g: dict) -> dict:
    import numpy as np
    import torch

    out: dict = {}
    for name, v in _objects(g):
        if isinstance(v, torch.Tensor):
            out[name] = _tensor_digest(v)
            if v.requires_grad and v.is_leaf:
                out[f"{name}.grad"] = _tensor_digest(v.grad) if v.grad is not None else None
        elif isinstance(v, np.ndarray):
            out[name] = {"dtype": str(v.dtype), "shape": list(v.shape),
                         "sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}
        elif isinstance(v, torch.nn.Module):
            out[f"{name}.training"] = {"value": [m.training for m in v.modules()]}
            for k, t in v.state_dict(keep_vars=True).items():
                out[f"{name}.state.{k}"] = _tensor_digest(t) if isinstance(t, torch.Tensor) else {"value": _plain(t)}
            for k, p in v.named_parameters():
                out[f"{name}.grad.{k}"] = _tensor_digest(p.grad) if p.grad is not None else None
                out[f"{name}.requires_grad.{k}"] = {"value": p.requires_grad}
        else:  # optimizer or LR scheduler
            _state_digests(f"{name}.state_dict", v.state_dict(), out)
    return out


# -- the trace's own facts ----------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def trace_facts(tr) -> dict:
    facts: dict = {"status": tr.meta.get("status"), "error": None, "graph": None, "save": None}
    err = tr.meta.get("error")
    if err:
        facts["error"] = {"type": err.get("type"), "message": err.get("message")}
    try:
        G = tr.graph
        facts["graph"] = {"ok": True, "nodes": G.number_of_nodes(), "edges": G.number_of_edges(),
                          "ops": sum(1 for _, k in G.nodes(data="kind") if k == "op")}
    except Exception as e:
        facts["graph"] = {"ok": False, "error": _one_line(e), "traceback": traceback.format_exc()}
        return facts
    import gradtrace

    if tr.meta.get("values") == "stats":
        facts["views"] = views_facts(G)
    with tempfile.TemporaryDirectory(prefix="gradtrace-corpus-") as d:
        try:
            path = tr.save(os.path.join(d, "trace"))
            files = sorted(os.listdir(path))
            back = gradtrace.load(path)
            n = back.graph.number_of_nodes()
            facts["save"] = {"ok": True, "files": files, "loaded_nodes": n,
                             "same_nodes": n == facts["graph"]["nodes"],
                             "same_summary": _head_summary_is_the_loaded_ones(path, back.graph)}
        except Exception as e:
            facts["save"] = {"ok": False, "error": _one_line(e), "traceback": traceback.format_exc()}
    return facts


def _head_summary_is_the_loaded_ones(path, G) -> bool:
    """Whether the summary and the step rows ``gradtrace show`` reads from the head of
    trace.json are the ones the loaded trace gives."""
    import json

    from gradtrace.analyze.step_rows import step_rows
    from gradtrace.analyze.summary import summarize
    from gradtrace.trace import load_steps, load_summary

    return (json.dumps(load_summary(path)[0]) == json.dumps(summarize(G))
            and json.dumps(load_steps(path)[0]) == json.dumps(step_rows(G)))


def views_facts(G) -> dict:
    """What a user reads first: the findings of ``gradtrace check`` (code, severity,
    first line) and the default picture (its title, its op and module boxes)."""
    import pydot

    import gradtrace
    from gradtrace.views.dot import to_dot

    out: dict = {}
    try:
        out["findings"] = [{"code": f.code, "severity": f.severity, "line": f.line, "message": f.message[:300]}
                           for f in gradtrace.check(G)]
    except Exception as e:
        out["findings_error"] = _one_line(e)
    try:
        (g,) = pydot.graph_from_dot_data(to_dot(G))
        nodes, stack = [], [g]
        while stack:
            sub = stack.pop()
            nodes += sub.get_nodes()
            stack += sub.get_subgraphs()
        out["boxes"] = sum(1 for n in nodes if (n.get_shape() or "").strip('"') in ("box", "box3d", "doubleoctagon"))
        out["title"] = (g.get_label() or "").strip('"').split("\\n")[0]
    except Exception as e:
        out["picture_error"] = _one_line(e)
    return out


# -- running --------------------------------------------------------------------------------


def run(program: str, mode: str) -> dict:
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    path = os.path.abspath(program)
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")

    import torch  # noqa: F401  (imported before the clock starts, as in every mode)

    import gradtrace

    mod = types.ModuleType("__main__")
    g = mod.__dict__
    g.update({"__file__": path, "__builtins__": builtins, "__cached__": None})

    old_main, old_argv, old_out, old_err = sys.modules["__main__"], sys.argv, sys.stdout, sys.stderr
    out, err = Tee(sys.stdout), Tee(sys.stderr)
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path))
    sys.modules["__main__"] = mod
    tr = None if mode == "untraced" else gradtrace.trace(values=mode)
    exception = None
    _seed()
    t0 = time.perf_counter()
    sys.stdout, sys.stderr = out, err
    try:
        if tr is None:
            exec(code, g)
        else:
            with tr:
                exec(code, g)
    except SystemExit as e:
        if e.code not in (0, None):
            exception = {"type": "SystemExit", "message": str(e.code)}
    except BaseException as e:  # the program's own exception: recorded, not re-raised
        exception = {"type": type(e).__name__, "message": str(e)}
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = old_out, old_err
        sys.modules["__main__"] = old_main
        for key in [k for k, m in sys.modules.items() if m is mod]:
            del sys.modules[key]  # e.g. __mp_main__, an alias multiprocessing makes
        sys.argv = old_argv
        if sys.path and sys.path[0] == os.path.dirname(path):
            sys.path.pop(0)
    seconds = time.perf_counter() - t0

    result = {"program": program, "mode": mode, "seconds": seconds,
              "stdout": out.getvalue(), "stderr": err.getvalue(), "exception": exception}
    result["digests"] = digests(g)

    refs = {}
    for name, v in _objects(g):
        if _trackable(v):
            refs[name] = weakref.ref(v)
    v = None
    # Clearing the globals (not only dropping the dict) breaks the cycles that run
    # through them and through autograd graphs (a hook or Function defined in the
    # program refers to its globals, which hold the tensors whose graph holds the
    # hook): untraced, everything then dies, so anything left is held from outside.
    g.clear()
    del mod, g
    gc.collect()
    result["tracked"] = len(refs)
    result["alive"] = sorted(name for name, r in refs.items() if r() is not None)

    if tr is not None:
        result["trace"] = trace_facts(tr)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    program, mode, outjson = argv
    result = run(program, mode)
    with open(outjson, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
