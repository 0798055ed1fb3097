"""Views a person can read (issue 10): real models drawn one step at a time, top to
bottom, parameters folded, repeated blocks folded, with a title, a legend and the
findings' codes. The programs are tests/views_corpus/*.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pydot
import pytest
import torch
from click.testing import CliRunner
from helpers import TESTS
from torch import nn

import gradtrace
from gradtrace.cli import main
from gradtrace.runner import run_script
from gradtrace.views.dot import have_graphviz, render, to_dot
from gradtrace.views.picture import cut

CORPUS = TESTS / "views_corpus"
needs_graphviz = pytest.mark.skipif(not have_graphviz(), reason="Graphviz's dot is not installed")


def _graph(name):
    r = run_script(str(CORPUS / f"{name}.py"), print_traceback=False)
    assert r.exit_code == 0
    return r.trace.graph


@pytest.fixture(scope="module")
def resnet():
    return _graph("resnet18_sgd")


@pytest.fixture(scope="module")
def cnn():
    return _graph("small_cnn")


@pytest.fixture(scope="module")
def transformer():
    return _graph("tiny_transformer")


def _parse(text):
    (g,) = pydot.graph_from_dot_data(text)
    return g


def _nodes(g):
    out = list(g.get_nodes())
    for sub in g.get_subgraphs():
        out += _nodes(sub)
    return out


def _labels(text) -> list[str]:
    return [str(n.get_label()).strip('"') for n in _nodes(_parse(text)) if n.get_label()]


def _clusters(g, path=()):
    """(label, labels of the nodes inside, at any depth) of every cluster."""
    out = []
    for sub in g.get_subgraphs():
        inner = [str(n.get_label()).strip('"') for n in _nodes(sub) if n.get_label()]
        out.append((str(sub.get_label()).strip('"'), inner))
        out += _clusters(sub)
    return out


def _svg_size(svg: bytes) -> tuple[float, float]:
    m = re.search(rb'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    return float(m.group(1)), float(m.group(2))


def _title(text) -> str:
    return str(_parse(text).get_label())


# -- the ResNet-18 training script, two SGD steps ------------------------------------------


@needs_graphviz
def test_resnet_default_drawing_has_at_most_150_nodes(resnet):
    svg = render(to_dot(resnet), "svg")
    assert svg.count(b'class="node"') <= 150


@needs_graphviz
def test_resnet_default_drawing_is_at_most_3_times_wider_than_tall(resnet):
    w, h = _svg_size(render(to_dot(resnet), "svg"))
    assert w / h <= 3


def test_resnet_default_drawing_is_the_last_of_two_steps(resnet):
    assert "step 2 of 2" in _title(to_dot(resnet))


def test_each_step_draws_its_own_input_batch(resnet):
    first = " ".join(e.get_label() or "" for e in _parse(to_dot(resnet, step=1)).get_edges())
    second = " ".join(e.get_label() or "" for e in _parse(to_dot(resnet, step=2)).get_edges())
    assert "images#1" in first and "images#1" not in second and "images#2" in second


def test_resnet_default_drawing_hides_initialisation_and_the_optimizer_step(resnet):
    labels = " ".join(_labels(to_dot(resnet)))
    assert "opt.step()" not in labels and "nn.Conv2d(" not in labels


def test_optimizer_phase_draws_opt_step_as_one_node(resnet):
    labels = _labels(to_dot(resnet, phase="optimizer"))
    assert sum("opt.step()" in lb for lb in labels) == 1


def test_parameters_are_folded_into_their_op_with_module_relative_names(resnet):
    labels = _labels(to_dot(resnet))
    assert "conv1: F.conv2d\\nweight 64×3×7×7" in labels
    assert not any("ResNet18.conv1.weight" in lb for lb in labels)


def test_backward_calls_are_numbered_across_the_program(resnet):
    octagons = [n for n in _nodes(_parse(to_dot(resnet, "autograd", step=2))) if n.get_shape() == "doubleoctagon"]
    assert [str(n.get_label()).strip('"').split("\\n")[0] for n in octagons] == ["#2 loss.backward()"]


def test_element_count_is_the_op_elements_of_one_step_not_of_the_whole_run(resnet):
    from gradtrace.views.forward import count_elements

    drawn = [n for n in _nodes(_parse(to_dot(resnet))) if n.get_shape() in ("box", "box3d")]
    ops = sum(1 for _, k in resnet.nodes(data="kind") if k == "op")
    assert count_elements(resnet) == len(drawn) and len(drawn) < ops / 5


def test_the_second_step_shows_the_parameter_gradients_of_its_own_backward_call(resnet):
    labels = _labels(to_dot(resnet, "autograd", step=2))
    stem = next(lb for lb in labels if lb.startswith("conv1: ConvolutionBackward0\\n← line 43"))
    assert ".grad weight #2 ‖" in stem and "#1" not in stem


def test_a_step_that_is_not_in_the_trace_is_a_value_error_naming_the_count(resnet):
    with pytest.raises(ValueError, match="it has 2 step"):
        to_dot(resnet, step=3)


# -- the small CNN ----------------------------------------------------------------------------


@needs_graphviz
def test_small_cnn_draws_as_a_vertical_chain(cnn):
    """Every op of the model lies below the one before it, in program order, and the
    chain is not spread sideways: all of them share one x position within a node width."""
    text = to_dot(cnn)
    layout = json.loads(subprocess.run(["dot", "-Tjson"], input=text.encode(), capture_output=True,
                                       check=True).stdout)
    chain = []  # (label, x, y) of the model's ops; relu and pool run twice, so labels repeat
    for o in layout.get("objects", []):
        label = o.get("label", "")
        if "pos" in o and (label.split(":")[0] in ("conv1", "bn1", "conv2", "bn2", "fc", "pool")
                           or label == "relu"):
            x, y = map(float, o["pos"].split(","))
            chain.append((label, x, y))
    assert len(chain) == 9
    ys = [y for _, _, y in chain]  # nodes come in program order; Graphviz y grows upwards
    assert all(a > b for a, b in zip(ys, ys[1:]))
    xs = [x for _, x, _ in chain]
    assert max(xs) - min(xs) < 72  # points: within one node's width


def test_tensors_are_edges_labelled_with_their_shape(cnn):
    labels = [str(e.get_label()).strip('"') for e in _parse(to_dot(cnn)).get_edges()]
    assert "4×8×28×28" in labels and not any("float32" in n for n in _labels(to_dot(cnn)))


def test_tensors_flag_draws_tensor_nodes_inside_the_module_that_made_them(cnn):
    clusters = _clusters(_parse(to_dot(cnn, tensors=True)))
    model = next(inner for label, inner in clusters if label == "model · SmallCNN")
    assert "x#1\\n4×8×14×14 float32" in model


def test_title_names_the_script_the_view_and_the_step(cnn):
    assert _title(to_dot(cnn, "autograd")).startswith('"small_cnn.py — autograd — step 1 of 1')


def test_every_view_has_a_legend(cnn):
    for view in ("forward", "autograd", "memory"):
        assert "legend" in [n.get_name() for n in _nodes(_parse(to_dot(cnn, view)))]


def test_the_legend_ends_with_the_notes_it_is_given(cnn):
    legend = next(n for n in _nodes(_parse(to_dot(cnn, notes=["costs of step 1:", "2 kFLOP known"])))
                  if n.get_name() == "legend")
    label = legend.get("label")
    assert label.index("compute op") < label.index("costs of step 1:") < label.index("2 kFLOP known")


def test_batchnorm_counter_update_is_a_line_of_its_op_not_a_node_of_its_own(cnn):
    labels = _labels(to_dot(cnn))
    assert sum("num_batches_tracked" in lb for lb in labels) == 2
    assert all(lb.startswith(("bn1: F.batch_norm", "bn2: F.batch_norm")) for lb in labels
               if "num_batches_tracked" in lb)


# -- the tiny transformer ---------------------------------------------------------------------


def test_default_depth_shows_both_layers_of_a_two_layer_encoder(transformer):
    boxes = [lb for lb in _labels(to_dot(transformer)) if "TransformerEncoderLayer" in lb]
    assert sorted(lb.split("\\n")[0] for lb in boxes) == ["0", "1"]


def test_autograd_view_shows_both_encoder_layers_at_the_default_depth(transformer):
    boxes = [lb for lb in _labels(to_dot(transformer, "autograd")) if "TransformerEncoderLayer" in lb]
    assert sorted(lb.split("\\n")[0] for lb in boxes) == ["0", "1"]


def _encoder(n_layers):
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
    with gradtrace.trace() as tr:
        enc(torch.ones(1, 3, 8)).sum().backward()
    return tr.graph


def test_a_run_of_repeated_blocks_folds_into_one_box():
    labels = _labels(to_dot(_encoder(4)))
    assert sum(lb.startswith("4 × TransformerEncoderLayer\\nlayers.0–3") for lb in labels) == 1


def test_a_deeper_depth_unfolds_repeated_blocks():
    labels = _labels(to_dot(_encoder(4), depth=4))
    assert not any(" × " in lb for lb in labels) and sum("self_attn" in lb for lb in labels) >= 4


def test_backward_nodes_name_the_forward_line_that_made_them(transformer):
    labels = _labels(to_dot(transformer, "autograd"))
    nll = next(lb for lb in labels if lb.startswith("NllLossBackward0"))
    assert "← line 24: loss = nn.functional" in nll


# -- small programs ---------------------------------------------------------------------------


def test_gradients_are_shown_per_backward_call_inside_the_node():
    w = torch.ones(3, requires_grad=True)
    with gradtrace.trace() as tr:
        y = (w * 2).sum()
        y.backward(retain_graph=True)
        y.backward()
    labels = " ".join(_labels(to_dot(tr.graph, "autograd", step="all")))
    assert re.search(r"\.grad #1 ‖3\.46‖ #2 ‖6\.93‖", labels)


def test_a_weighting_vector_is_shown_by_its_values_summary():
    x = torch.ones(3, requires_grad=True)
    with gradtrace.trace() as tr:
        y = x * 2
        g = torch.full((3,), 0.5)
        y.backward(g)
    assert "w = g: 3 all 0.5" in to_dot(tr.graph, "autograd")


def test_a_no_grad_region_is_framed():
    with gradtrace.trace() as tr:
        a = torch.ones(2)
        with torch.no_grad():
            b = a * 3
        c = b + 1  # noqa: F841
    framed = [inner for label, inner in _clusters(_parse(to_dot(tr.graph))) if label.startswith("no_grad")]
    assert len(framed) == 1 and any(lb.startswith(".mul") for lb in framed[0])


def _teacher_student():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    teacher = nn.Sequential(nn.Linear(4, 2))
    x = torch.randn(3, 4)
    with gradtrace.trace() as tr:
        with torch.no_grad():
            target = teacher(x)
        out = model(x)
        loss = ((out - target) ** 2).mean()
        loss.backward()
    return to_dot(tr.graph)


def test_a_module_called_under_no_grad_is_drawn_inside_the_no_grad_frame():
    g = _parse(_teacher_student())
    frames = [sub for sub in g.get_subgraphs() if str(sub.get_label()).strip('"').startswith("no_grad")]
    assert [str(s.get_label()).strip('"') for f in frames for s in f.get_subgraphs()] == ["teacher · Sequential"]


def test_a_root_module_is_labelled_with_the_variable_it_was_called_through():
    labels = [label for label, _ in _clusters(_parse(_teacher_student()))]
    assert "model · Sequential" in labels


def test_the_with_no_grad_statement_is_drawn_as_its_frame_and_not_as_boxes():
    text = _teacher_student()
    frame = [label for label, _ in _clusters(_parse(text)) if label.startswith("no_grad")]
    assert frame == [f"no_grad · line {_teacher_student.__code__.co_firstlineno + 5}"]
    assert not [lb for lb in _labels(text) if lb.startswith("no_grad")]


def test_a_module_output_is_named_where_it_leaves_the_module():
    edges = [str(e.get_label()).strip('"') for e in _parse(_teacher_student()).get_edges()]
    assert "out\\n3×2" in edges and "target\\n3×2" in edges


def test_a_finding_puts_its_code_on_the_outlined_node():
    with gradtrace.trace() as tr:
        z = torch.zeros(2)
        bad = z / z  # noqa: F841
    G = tr.graph
    findings = gradtrace.check(G)
    assert any(f.code == "GT110" for f in findings)
    marked = [n for n in _nodes(_parse(to_dot(G, findings=findings))) if "GT110" in str(n.get_label())]
    assert marked and all(n.get("color") == '"#cc0000"' for n in marked)


def test_saved_flag_draws_the_tensors_a_grad_fn_saved(cnn):
    notes = [n for n in _nodes(_parse(to_dot(cnn, "autograd", saved=True))) if n.get_shape() == "note"]
    assert any("images 4×1×28×28" in str(n.get_label()) for n in notes)


def test_memory_view_draws_each_storage_as_a_column_of_its_tensors(cnn):
    clusters = _clusters(_parse(to_dot(cnn, "memory")))
    counter = [inner for label, inner in clusters if label.startswith("s:") and
               any("bn1.num_batches_tracked v2" in lb for lb in inner)]
    assert len(counter) == 1 and len(counter[0]) == 2


@needs_graphviz
def test_memory_view_labels_have_no_literal_backslash_n(cnn):
    svg = render(to_dot(cnn, "memory"), "svg").decode()
    assert "\\n" not in svg


def test_labels_name_the_file_when_ops_come_from_several_files(tmp_path):
    import runpy

    (tmp_path / "first.py").write_text("import torch\na = torch.ones(2) * 2\n")
    (tmp_path / "second.py").write_text("b = a + 1\n")
    with gradtrace.trace() as tr:
        ns = runpy.run_path(str(tmp_path / "first.py"))
        runpy.run_path(str(tmp_path / "second.py"), init_globals={"a": ns["a"]})
    labels = " ".join(_labels(to_dot(tr.graph)))
    assert "first.py:2: a = torch.ones(2) * 2" in labels and "second.py:1: b = a + 1" in labels


def test_long_code_is_cut_at_a_word_boundary_with_an_ellipsis():
    assert cut("loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens)", 30) == \
        "loss = nn.functional.…"


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_cnn(cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    from gradtrace.graph.io import save

    save(cnn, out, None, None)
    return out


def test_cli_step_out_of_range_is_a_one_line_error(saved_cnn):
    r = CliRunner().invoke(main, ["dot", str(saved_cnn), "--step", "5"])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and "1 step" in r.output


def test_cli_unknown_phase_is_a_one_line_error(saved_cnn):
    r = CliRunner().invoke(main, ["dot", str(saved_cnn), "--phase", "training"])
    assert r.exit_code == 2 and "unknown phase 'training'" in r.output


def test_cli_phase_all_draws_the_model_construction(saved_cnn):
    r = CliRunner().invoke(main, ["dot", str(saved_cnn), "--phase", "all"])
    assert r.exit_code == 0 and "nn.Conv2d(1, 8, 3, padding=1)" in r.output


class _PassThrough(nn.Module):
    """timm's ViT in small: a `pos_drop = nn.Dropout(p=0.0)` returns its own input."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.pos_drop = nn.Dropout(p=0.0)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc2(self.pos_drop(self.fc1(x)))


def _edges_between_labels(text):
    g = _parse(text)
    label = {n.get_name(): (n.get_label() or "").strip('"') for n in _nodes(g)}
    return {(label.get(e.get_source(), ""), label.get(e.get_destination(), "")) for e in g.get_edges()}


def test_an_op_that_returns_its_own_input_keeps_the_edge_into_it_and_out_of_it():
    model = _PassThrough()
    with gradtrace.trace() as tr:
        model(torch.ones(2, 4)).sum().backward()
    pairs = _edges_between_labels(to_dot(tr.graph))
    heads = {(a.split("\\n")[0], b.split("\\n")[0]) for a, b in pairs}
    assert ("fc1: F.linear", "pos_drop: F.dropout") in heads and ("pos_drop: F.dropout", "fc2: F.linear") in heads


# -- steps and phases of real training loops ----------------------------------------------

from gradtrace.views.steps import find_steps  # noqa: E402


def _mlp_loop(body, steps=3):
    """Trace `steps` iterations of `body(model, opt, x)` on a small MLP; return the graph."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    with gradtrace.trace() as tr:
        for _ in range(steps):
            body(model, opt, x)
    return tr.graph


def _phases_by_name(G, steps, name):
    return {steps.phase_of[n] for n, d in G.nodes(data=True) if d.get("kind") == "op" and d["name"] == name}


def test_a_loss_item_between_backward_and_step_adds_no_step():
    total = []

    def body(model, opt, x):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        total.append(loss.item())  # pytorch/examples' VAE: train_loss += loss.item()
        opt.step()

    G = _mlp_loop(body)
    steps = find_steps(G)
    assert steps.count == 3 and steps.complete == 3


def test_the_optimizer_step_after_a_loss_item_is_the_optimizer_phase():
    def body(model, opt, x):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        loss.item()
        opt.step()

    G = _mlp_loop(body)
    steps = find_steps(G)
    updates = {steps.phase_of[n] for n, d in G.nodes(data=True)
               if d.get("kind") == "op" and d.get("code") == "opt.step()"}
    assert updates == {"optimizer"}


def test_a_hand_written_update_through_data_is_the_optimizer_phase_of_its_step():
    def body(model, opt, x):
        model.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        for p in model.parameters():  # pytorch/examples' word language model
            p.data.add_(p.grad, alpha=-0.1)

    G = _mlp_loop(body)
    steps = find_steps(G)
    assert steps.count == 3 and _phases_by_name(G, steps, "Tensor.add_") == {"optimizer"}


def test_non_reentrant_checkpointing_keeps_one_step_per_backward():
    from torch.utils.checkpoint import checkpoint

    def body(model, opt, x):
        opt.zero_grad()
        loss = checkpoint(model, x, use_reentrant=False).pow(2).mean()
        loss.backward()  # recomputes the forward inside the backward call
        opt.step()

    steps = find_steps(_mlp_loop(body))
    assert steps.count == 3 and steps.complete == 3


def test_making_the_batch_is_the_data_phase_and_not_drawn():
    def body(model, opt, x):
        batch = torch.stack([x[i] for i in range(4)])  # nanoGPT's get_batch in small
        opt.zero_grad()
        model(batch).pow(2).mean().backward()
        opt.step()

    G = _mlp_loop(body)
    steps = find_steps(G)
    assert _phases_by_name(G, steps, "torch.stack") == {"data"}
    assert "stack" not in " ".join(_labels(to_dot(G)))


_LIBRARY_OPTIMIZER = '''
import torch


class ScaledSGD(torch.optim.Optimizer):
    """An optimizer as a library ships one (transformers' Adafactor, say)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                loss = p.grad.pow(2).mean()  # a library variable that happens to be called loss
                p.add_(p.grad / (loss.sqrt() + 1e-8), alpha=-group["lr"])
'''


@pytest.fixture
def library_optimizer(tmp_path, monkeypatch):
    """A module installed in a `site-packages` folder: library code, as pip installs it."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "fakeopt.py").write_text(_LIBRARY_OPTIMIZER)
    monkeypatch.syspath_prepend(str(site))
    import importlib

    import fakeopt

    yield importlib.reload(fakeopt)


def _library_optimizer_loop(fakeopt):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = fakeopt.ScaledSGD(model.parameters())
    x = torch.randn(8, 4)
    with gradtrace.trace() as tr:
        for _ in range(3):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
    return tr.graph


def test_a_library_optimizers_ops_are_the_optimizer_phase(library_optimizer):
    G = _library_optimizer_loop(library_optimizer)
    steps = find_steps(G)
    lib = {steps.phase_of[n] for n, d in G.nodes(data=True) if d.get("kind") == "op" and d.get("lib_file")}
    assert steps.count == 3 and lib == {"optimizer"}


def test_a_library_op_has_the_users_line_and_the_librarys_place(library_optimizer):
    G = _library_optimizer_loop(library_optimizer)
    d = next(d for _, d in G.nodes(data=True) if d.get("kind") == "op" and d.get("name") == "Tensor.pow"
             and d.get("lib_file"))
    assert d["code"] == "opt.step()" and Path(d["lib_file"]).name == "fakeopt.py" and d["direct"] is False


def test_a_librarys_variable_names_no_tensor_of_the_users(library_optimizer):
    G = _library_optimizer_loop(library_optimizer)
    losses = sorted(d.get("label_n") for _, d in G.nodes(data=True) if d.get("label") == "loss")
    assert losses == [1, 2, 3]


class _CellLoop(nn.Module):
    """pytorch/examples' time-sequence model in small: an LSTMCell called per time step."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(1, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h = c = torch.zeros(x.size(0), 8)
        outs = []
        for x_t in x.split(1, dim=1):
            h, c = self.cell(x_t, (h, c))
            outs.append(self.out(h))
        return torch.cat(outs, dim=1)


def _cell_loop_graph():
    torch.manual_seed(0)
    model = _CellLoop()
    with gradtrace.trace() as tr:
        model(torch.randn(2, 12)).pow(2).mean().backward()
    return tr.graph


def test_a_module_called_in_a_loop_is_one_box_that_counts_its_calls():
    labels = _labels(to_dot(_cell_loop_graph()))
    cells = [lb for lb in labels if lb.startswith("cell\\nLSTMCell")]
    assert len(cells) == 1 and "12 calls" in cells[0]


def test_a_loop_of_module_calls_keeps_the_picture_small():
    g = _parse(to_dot(_cell_loop_graph()))
    assert len([n for n in _nodes(g) if n.get_shape() in ("box", "box3d")]) <= 8


def test_a_users_line_run_in_a_loop_is_one_box_that_counts_its_runs():
    model = nn.Linear(4, 1)
    with gradtrace.trace() as tr:
        losses = []
        for i in range(10):
            out = model(torch.ones(1, 4) * i)
            losses.append(-out.sum() * 0.5)  # the same user line, once per pass
        torch.stack(losses).sum().backward()
    labels = _labels(to_dot(tr.graph))
    line = [lb for lb in labels if "losses.append" in lb]
    assert len(line) == 1 and "run 10 times" in line[0]


def test_the_autograd_view_draws_two_gradients_reaching_one_node_in_one_call():
    with gradtrace.trace() as tr:
        x = torch.ones(4, requires_grad=True)
        a, b = x.chunk(2)  # two outputs of one autograd node
        (a * 2 + b * 3).sum().backward()
    labels = " ".join(_labels(to_dot(tr.graph, view="autograd", step="all")))
    assert labels.count("∇ #1") >= 2
