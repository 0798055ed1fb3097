"""Recorder facts the checks and reports rely on: what autograd saved when it saved a
view made inside an op, parameters whose data was swapped, names of module outputs,
and the op behind every move."""

import copy

import torch
from helpers import edges, ops, outputs, tensors

import gradtrace


def _fn_of_op(G, op_attrs):
    return G.nodes[outputs(G, op_attrs)[0]]["grad_fn"]


def test_a_weight_linear_saves_as_a_transpose_gets_a_saves_edge_via_view():
    lin = torch.nn.Linear(3, 2)
    x = torch.ones(4, 3, requires_grad=True)
    with gradtrace.trace() as tr:
        y = lin(x)
    G = tr.graph
    (linear,) = ops(G, "torch.nn.functional.linear")
    fn = _fn_of_op(G, linear)
    (w,) = tensors(G, "Linear.weight")
    assert [d.get("via") for _, _, d in edges(G, "saves", fn, w)] == ["view"]


def test_a_tensor_saved_as_itself_has_no_via():
    with gradtrace.trace() as tr:
        a = torch.ones(3, requires_grad=True)
        b = a * a
    G = tr.graph
    fn = G.nodes[tensors(G, "b")[0]]["grad_fn"]
    assert [d.get("via") for _, _, d in edges(G, "saves", fn, tensors(G, "a")[0])] == [None]


def test_the_clone_inside_deepcopy_is_not_named_after_the_copy():
    q = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with gradtrace.trace() as tr:
        target = copy.deepcopy(q)
        target(torch.ones(1, 2))
    G = tr.graph
    clones = ops(G, "Tensor.clone")
    assert clones and all(G.nodes[outputs(G, d)[0]]["label"] != "target" for d in clones)


def test_a_deepcopied_tensor_is_named_after_the_copy():
    a = torch.ones(3)
    with gradtrace.trace() as tr:
        b = copy.deepcopy(a)
        b.sum()
    G = tr.graph
    (dc,) = ops(G, "Tensor.__deepcopy__")
    assert G.nodes[outputs(G, dc)[0]]["label"] == "b"


def _last_version(G, label):
    return max((n for n in tensors(G, label)), key=lambda n: G.nodes[n]["version"])


def test_a_parameter_of_a_model_made_double_is_float64_under_its_name():
    m = torch.nn.Linear(2, 2)
    with gradtrace.trace() as tr:
        m.double()
        m(torch.ones(1, 2, dtype=torch.float64))
    G = tr.graph
    assert G.nodes[_last_version(G, "Linear.weight")]["dtype"] == "float64"


def test_a_parameter_whose_data_was_swapped_keeps_param_of_and_requires_grad():
    m = torch.nn.Linear(2, 2)
    with gradtrace.trace() as tr:
        m(torch.ones(1, 2))
        m.double()
    G = tr.graph
    d = G.nodes[_last_version(G, "Linear.weight")]
    assert (d["dtype"], d["param_of"], d["param_kind"], d["requires_grad"]) == \
        ("float64", "mod:Linear", "parameter", True)


def test_the_linear_after_double_reads_the_float64_version_of_the_weight():
    m = torch.nn.Linear(2, 2)
    with gradtrace.trace() as tr:
        m.double()
        m(torch.ones(1, 2, dtype=torch.float64))
    G = tr.graph
    (linear,) = ops(G, "torch.nn.functional.linear")
    ins = [G.nodes[u] for u, _, k in G.in_edges(f"op:{linear['seq']}", data="kind") if k == "input"]
    assert {d["label"]: d["dtype"] for d in ins}["Linear.weight"] == "float64"


def test_a_data_swap_is_a_next_version_edge_autograd_does_not_see():
    m = torch.nn.Linear(2, 2)
    with gradtrace.trace() as tr:
        m(torch.ones(1, 2))
        m.double()
    G = tr.graph
    (swap,) = [d for _, v, d in edges(G, "next_version") if v == _last_version(G, "Linear.weight")]
    assert (swap["visible"], swap["data_set"], G.nodes[swap["op"]]["name"]) == (False, True, "Tensor.data.__set__")


def test_a_write_into_the_old_data_after_a_swap_is_not_a_write_into_the_tensor():
    with gradtrace.trace() as tr:
        p = torch.ones(2)
        old = p.data
        p.data = torch.zeros(2, dtype=torch.float64)
        old.add_(1)
    G = tr.graph
    (add,) = ops(G, "Tensor.add_")
    assert [u for u, _, d in edges(G, "next_version") if d["op"] == f"op:{add['seq']}"] == tensors(G, "old")[:1]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x).relu()


def _module_output(G, op_name):
    """The output of the last op named ``op_name``."""
    return G.nodes[outputs(G, ops(G, op_name)[-1])[0]]


def test_the_output_of_a_model_with_its_own_forward_is_named_by_the_callers_line():
    net = _Net()
    with gradtrace.trace() as tr:
        out = net(torch.ones(1, 2))
    assert _module_output(tr.graph, "Tensor.relu")["label"] == "out"


def test_a_module_output_used_in_a_larger_expression_gets_no_name_of_its_own():
    net = _Net()
    with gradtrace.trace() as tr:
        y = net(torch.ones(1, 2)) * 2
    assert _module_output(tr.graph, "Tensor.relu")["label"] is None


def test_a_library_module_output_used_in_a_larger_expression_gets_no_name():
    m = torch.nn.Linear(2, 2)
    with gradtrace.trace() as tr:
        y = m(torch.ones(1, 2)) * 2
    assert _module_output(tr.graph, "torch.nn.functional.linear")["label"] is None


def test_submodules_of_a_sequential_do_not_take_the_callers_name():
    seq = torch.nn.Sequential(_Net(), torch.nn.Linear(2, 2))
    with gradtrace.trace() as tr:
        out = seq(torch.ones(1, 2))
    assert _module_output(tr.graph, "Tensor.relu")["label"] is None


def test_a_dtype_conversion_move_names_the_op_that_made_it():
    with gradtrace.trace() as tr:
        a = torch.ones(2)
        b = a.to(torch.float64)
    G = tr.graph
    (to,) = ops(G, "Tensor.to")
    assert [d.get("op") for _, _, d in edges(G, "moved_to")] == [f"op:{to['seq']}"]


def test_the_moves_summary_gives_an_autocast_cast_the_line_of_its_op():
    from gradtrace.analyze.summary import summarize

    with gradtrace.trace() as tr:
        a = torch.ones(2, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = a @ a.t()
    G = tr.graph
    (mm,) = ops(G, "Tensor.matmul")
    assert {m["line"] for m in summarize(G)["moves"]} == {mm["line"]}


def test_a_root_module_node_carries_the_variable_the_user_called_it_through():
    q = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with gradtrace.trace() as tr:
        target = copy.deepcopy(q)
        q(torch.ones(1, 2))
        target(torch.ones(1, 2))
    G = tr.graph
    assert {d["path"]: d.get("var") for _, d in G.nodes(data=True) if d["kind"] == "module"} == \
        {"Sequential": "q", "Sequential.0": None, "Sequential#2": "target", "Sequential#2.0": None}


def test_an_int_and_a_float_argument_are_shown_as_written():
    with gradtrace.trace() as tr:
        a = torch.ones(2)
        c = a + 1
        d = a + 1.0
    assert [o["args"] for o in ops(tr.graph, "Tensor.add")] == ["1", "1.0"]


def test_a_list_of_floats_after_a_list_of_ints_is_shown_as_written():
    with gradtrace.trace() as tr:
        a = torch.tensor([1, 2])
        b = torch.tensor([1.0, 2.0])
    assert [o["args"] for o in ops(tr.graph, "torch.tensor")] == ["(1, 2)", "(1.0, 2.0)"]


def test_records_of_a_loop_leave_the_garbage_collector_before_its_oldest_generation():
    import gc

    with gradtrace.trace(values="none") as tr:
        x = torch.ones(2)
        for _ in range(50):
            x = x * 0.5
            x.add_(1)
        # Two young collections move a record to the oldest generation, where every
        # full collection walks it again, unless they stopped tracking it.
        gc.collect(0)
        gc.collect(1)
        records = tr.recorder.records
        tracked = [r for r in records.ops + records.edges if r is not None and gc.is_tracked(r)]
    assert tracked == []
