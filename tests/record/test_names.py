"""What each tensor is called: the name the user bound it to, told apart from other
tensors bound to the same name, and names for parameters of modules never called."""

import torch
from helpers import edges, inputs, ops, outputs, tensors

import gradtrace
from gradtrace.graph.names import display_name


def test_every_loss_of_a_training_loop_keeps_the_name_loss():
    model = torch.nn.Linear(3, 1)
    crit = torch.nn.MSELoss()
    x, y = torch.ones(4, 3), torch.zeros(4, 1)
    with gradtrace.trace() as tr:
        for _ in range(3):
            loss = crit(model(x), y)
            loss.backward()
    G = tr.graph
    roots = [v for _, v, _ in edges(G, "weights")]
    assert [G.nodes[r]["label"] for r in roots] == ["loss"] * 3


def test_every_output_of_a_module_called_in_a_loop_keeps_its_name():
    model = torch.nn.Linear(3, 1)
    x = torch.ones(4, 3)
    with gradtrace.trace() as tr:
        for _ in range(3):
            out = model(x)
            out.sum()
    G = tr.graph
    linears = ops(G, "torch.nn.functional.linear")
    assert [G.nodes[outputs(G, d)[0]]["label"] for d in linears] == ["out"] * 3


def test_input_and_result_bound_to_one_name_get_different_display_names():
    with gradtrace.trace() as tr:
        a = torch.ones(3)
        a = (a * 3) / (a - 1)
    G = tr.graph
    first, second = tensors(G, "a")
    assert (display_name(G, first), display_name(G, second)) == ("a#1", "a#2")


def test_a_name_only_one_tensor_has_is_shown_as_it_is():
    with gradtrace.trace() as tr:
        a = torch.ones(3)
        b = a * 2
    G = tr.graph
    assert display_name(G, tensors(G, "b")[0], version=True) == "b@v0"


def test_a_tensor_with_a_name_of_its_own_has_no_label_n():
    with gradtrace.trace() as tr:
        a = torch.ones(3)
        a = a * 2
        b = a + 1
    G = tr.graph
    assert "label_n" not in G.nodes[tensors(G, "b")[0]]


def test_parameters_of_a_module_never_called_are_named_from_their_module():
    x = torch.ones(4, 3)
    with gradtrace.trace() as tr:
        called = torch.nn.Linear(3, 2)
        unused = torch.nn.Linear(3, 2)
        called(x)
        torch.nn.functional.linear(x, unused.weight, unused.bias)
    G = tr.graph
    (f,) = [d for d in ops(G, "torch.nn.functional.linear") if d["module"] is None]
    ins = {G.nodes[t]["shape"][0] if len(G.nodes[t]["shape"]) == 1 else "w": G.nodes[t]["label"]
           for t in [u for u, _, k in G.in_edges(f"op:{f['seq']}", data="kind") if k == "input"][1:]}
    assert ins == {"w": "Linear#2.weight", 2: "Linear#2.bias"}


def test_a_temporary_inside_a_module_constructor_is_not_named_after_the_module():
    with gradtrace.trace() as tr:
        model = torch.nn.Linear(3, 2)
    G = tr.graph
    empties = ops(G, "torch.empty")
    assert empties and all(G.nodes[outputs(G, d)[0]]["label"] != "model" for d in empties)


def test_a_tensor_made_before_the_trace_is_named_by_its_variable():
    x = torch.ones(2, requires_grad=True)
    with gradtrace.trace() as tr:
        y = x * 2  # noqa: F841
    G = tr.graph
    (mul,) = ops(G, "Tensor.__mul__") or ops(G, "Tensor.mul")
    assert [G.nodes[t]["label"] for t in inputs(G, mul)] == ["x"]


def test_a_parameter_bound_to_a_name_before_the_trace_keeps_its_module_name():
    model = torch.nn.Linear(3, 1)
    w = model.weight  # noqa: F841
    with gradtrace.trace() as tr:
        model(torch.ones(2, 3))
    G = tr.graph
    (linear,) = ops(G, "torch.nn.functional.linear")
    assert G.nodes[inputs(G, linear)[1]]["label"] != "w"


def test_a_name_bound_before_the_trace_does_not_replace_a_name_given_inside_it():
    a = torch.ones(2)
    with gradtrace.trace() as tr:
        b = a  # the same tensor, bound again by an op's result below
        b = b.add_(1)  # noqa: F841
    G = tr.graph
    assert {G.nodes[n]["label"] for n in G.nodes if G.nodes[n].get("kind") == "tensor"} == {"b"}


class _Proxy:
    """An object whose ``__class__`` runs code when asked (lazy-import proxies do)."""

    asked = False

    @property
    def __class__(self):
        type(self).asked = True
        return object


def test_looking_for_names_before_the_trace_runs_no_code_of_the_users_objects():
    proxy = _Proxy()  # noqa: F841 - a local the trace looks over
    with gradtrace.trace():
        pass
    assert not _Proxy.asked


def test_torch_mm_is_named_torch_mm_not_spmm():
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    with gradtrace.trace() as tr:
        c = torch.mm(a, b)
    assert [d["name"] for d in ops(tr.graph)] == ["torch.mm"]


def _show_ops_json(tmp_path, tr):
    import json

    from click.testing import CliRunner

    from gradtrace.cli import main

    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--ops", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_a_saved_traces_ops_list_inputs_in_argument_order(tmp_path):
    with gradtrace.trace() as tr:
        b = torch.ones(2, 2)  # made first
        a = torch.full((2, 2), 2.0)
        c = torch.mm(a, b)
    row = [r for r in _show_ops_json(tmp_path, tr) if r["op"] == "torch.mm"][0]
    assert [t.split("@")[0] for t in row["inputs"]] == ["a", "b"]


def test_a_saved_linears_inputs_read_input_weight_bias(tmp_path):
    with gradtrace.trace() as tr:
        w = torch.ones(3, 2)  # made before the input, as parameters are
        bias = torch.zeros(3)
        x = torch.ones(4, 2)
        y = torch.nn.functional.linear(x, w, bias)
    row = [r for r in _show_ops_json(tmp_path, tr) if r["op"].endswith("linear")][0]
    assert [t.split("@")[0] for t in row["inputs"]] == ["x", "w", "bias"]


def _loss_function(recon, x):
    bce = torch.nn.functional.binary_cross_entropy(recon, x, reduction="sum")
    return bce + recon.pow(2).sum()  # returned: the caller names it


def _root_labels(G):
    return [G.nodes[v].get("label") for _, v, _ in edges(G, "weights")]


def test_a_loss_a_helper_function_returns_is_named_by_the_callers_variable():
    model = torch.nn.Linear(4, 4)
    x = torch.rand(2, 4)
    with gradtrace.trace() as tr:
        recon = torch.sigmoid(model(x))
        loss = _loss_function(recon, x)
        loss.backward()
    assert _root_labels(tr.graph) == ["loss"]


def test_a_loss_read_from_an_output_object_is_named_by_its_variable():
    model = torch.nn.Linear(4, 1)
    x = torch.rand(2, 4)
    with gradtrace.trace() as tr:
        outputs = {"loss": model(x).pow(2).mean()}  # a model's output object (ModelOutput)
        loss = outputs["loss"]  # no op: nothing else names it
        loss.backward()
    assert _root_labels(tr.graph) == ["loss"]


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.act = torch.nn.GELU()

    def forward(self, x):
        x = self.fc(x)
        x = self.act(x)
        return x


class _TwoBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Mlp(), _Mlp()])

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return x


def _result_labels(G, name):
    """The label of the result of each op called ``name``, in call order."""
    return [G.nodes[outputs(G, d)[0]].get("label") for d in ops(G, name)]


def _ops_naming(G, label):
    """The names of the ops, in call order, whose results carry ``label``."""
    return [d["name"] for d in ops(G) if any(G.nodes[t].get("label") == label for t in outputs(G, d))]


def test_each_block_of_a_module_list_names_the_result_its_statement_binds():
    # Block 1's frame may take the address block 0's had: two executions of the same
    # statement, not one.
    model, x = _TwoBlocks(), torch.ones(2, 4)
    with gradtrace.trace() as tr:
        model(x)
    assert _result_labels(tr.graph, "torch.nn.functional.linear") == ["x", "x"]


def test_each_layer_a_loop_calls_names_the_result_its_statement_binds():
    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    model, x = Stack(), torch.ones(2, 4)
    with gradtrace.trace() as tr:
        model(x)
    assert _result_labels(tr.graph, "torch.nn.functional.linear") == ["x", "x", "x"]


class _Own(torch.nn.Module):
    def forward(self, x):
        return x * 2


class _Body(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), _Own(), torch.nn.ReLU(), torch.nn.Linear(4, 2))

    def forward(self, x):
        out = self.body(x)
        return out


def test_only_the_last_result_of_one_call_of_a_sequential_takes_the_name_its_statement_binds():
    model, x = _Body(), torch.ones(2, 4)
    with gradtrace.trace() as tr:
        model(x)
    assert _ops_naming(tr.graph, "out") == ["torch.nn.functional.linear"]
    assert _result_labels(tr.graph, "torch.nn.functional.linear") == [None, "out"]


def _library_function(src: str, name: str):
    """A function as the recorder sees one of a third-party package (its file lies under
    site-packages)."""
    ns: dict = {}
    exec(compile(src, "/opt/site-packages/hooklib/hooks.py", "exec"), ns)
    return ns[name]


def test_a_result_a_library_forward_hook_makes_is_not_named_after_the_models_statement():
    # The module's own forward hooks run after the module stack has let the module go.
    model, x = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)), torch.ones(2, 4)
    model[0].register_forward_hook(_library_function("def double(m, i, o):\n    return o * 2\n", "double"))
    with gradtrace.trace() as tr:
        out = model(x)
    assert _ops_naming(tr.graph, "out") == ["torch.nn.functional.linear"]
    assert _result_labels(tr.graph, "Tensor.mul") == [None]
    assert out.shape == (2, 2)
