"""Small queries over trace graphs, shared by the tests."""

from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent  # the tests folder: its corpora and helpers


def ops(G, name=None, category=None):
    """Op attrs in call order, optionally filtered by name and category."""
    out = sorted((d for _, d in G.nodes(data=True) if d["kind"] == "op"), key=lambda d: d["seq"])
    if name is not None:
        out = [d for d in out if d["name"] == name]
    if category is not None:
        out = [d for d in out if d["category"] == category]
    return out


def op_node(G, seq):
    return f"op:{seq}"


def tensors(G, label):
    """Tensor node ids with this variable label, oldest tid and version first."""
    found = [(d["tid"], d["version"], n) for n, d in G.nodes(data=True)
             if d["kind"] == "tensor" and d.get("label") == label]
    return [n for _, _, n in sorted(found)]


def edges(G, kind, u=None, v=None):
    return [(a, b, d) for a, b, d in G.edges(data=True)
            if d["kind"] == kind and (u is None or a == u) and (v is None or b == v)]


def outputs(G, op_attrs):
    return [v for _, v, k in G.out_edges(f"op:{op_attrs['seq']}", data="kind") if k == "output"]


def inputs(G, op_attrs):
    return [u for u, _, k in G.in_edges(f"op:{op_attrs['seq']}", data="kind") if k == "input"]


def grad_reaching(G, node):
    """The stats of the gradients that reached a tensor node (one per backward call)."""
    return [d["stats"] for _, _, d in edges(G, "grad", v=node)]


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                                                                      b.view(-1).view(torch.uint8) if b.numel() else b)


def free_port() -> int:
    """A TCP port free on this machine now (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd, script, *gradtrace_args, script_args=(), ranks=2, timeout=180):
    """Launch ``script`` (with ``script_args``) on ``ranks`` local processes with
    ``python -m torch.distributed.run``, traced by ``gradtrace run GRADTRACE_ARGS``
    (untraced when there are none); return the completed process."""
    import subprocess
    import sys

    run = ["-m", "gradtrace", "run", *map(str, gradtrace_args)] if gradtrace_args else []
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                           "--master_port", str(free_port()), *run, str(script), *map(str, script_args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def overflowing_scaler_setup():
    """``(model, opt, scaler, x, y)`` of a small regression whose loss scaler starts at a
    scale too large: its first three updates overflow and are skipped while it lowers
    the scale (seeded)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    x = torch.randn(64, 4) * 3
    return model, opt, scaler, x, x.sum(1, keepdim=True)


def scaled_loop(model, opt, scaler, x, y, steps, nan_at=None, after_backward=None):
    """Train ``steps`` steps of mean squared error with ``scaler`` scaling the loss;
    ``nan_at``: the step from which ``x`` holds a NaN; ``after_backward(loss)`` is
    called after each backward call, before the scaler's step."""
    for step in range(steps):
        if step == nan_at:
            x[0, 0] = float("nan")
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward(loss)
        scaler.step(opt)
        scaler.update()


def cnn_run(length, **trace_kwargs):
    """A seeded CNN with BatchNorm and dropout trained with Adam on a DataLoader's
    shuffled batches for ``length`` steps, traced by ``gradtrace.trace(**trace_kwargs)``
    when any are given; returns ``(trace or None, the model's state_dict)``."""
    import gradtrace

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loop():
        done = 0
        while done < length:
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if done == length:
                    return

    if not trace_kwargs:
        loop()
        return None, model.state_dict()
    with gradtrace.trace(**trace_kwargs) as tr:
        loop()
    return tr, model.state_dict()
