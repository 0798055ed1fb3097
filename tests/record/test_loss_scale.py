"""Each update of a loss scaler (torch.amp.GradScaler) while recording: the scale the
step used, whether the scaler skipped its update, and the scale it set."""

import torch

import gradtrace


def _scaled(steps=6, enabled=True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    # a first scale too large: the first three updates overflow and are skipped
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000, enabled=enabled)
    x = torch.randn(64, 4) * 3
    y = x.sum(1, keepdim=True)
    with gradtrace.trace() as tr:
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return tr


def _updates(tr):
    return sorted((d for _, d in tr.graph.nodes(data=True) if d.get("kind") == "loss_scale"), key=lambda d: d["seq"])


def test_each_update_says_whether_the_scaler_skipped_it():
    assert [d["skipped"] for d in _updates(_scaled())] == [True, True, True, False, False, False]


def test_a_skipped_update_halves_the_scale():
    first = _updates(_scaled())[0]
    assert (first["scale"], first["new_scale"]) == (2.0 ** 127, 2.0 ** 126)


def test_a_disabled_scaler_records_nothing():
    assert _updates(_scaled(enabled=False)) == []
