"""Section 2 of the course notes (autograd): one test per lesson."""

import torch
from helpers import edges, grad_reaching, ops, outputs, tensors
from models import Square

import gradtrace


def test_2_1_grad_fn_next_and_accumulate_grad_tie_autograd_to_the_ops():
    with gradtrace.trace() as tr:
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
    G = tr.graph
    (x0,), (y0,), (o0,) = tensors(G, "x"), tensors(G, "y"), tensors(G, "out")
    assert G.nodes[x0]["is_leaf"] and G.nodes[x0]["grad_fn"] is None
    fy = G.nodes[y0]["grad_fn"]
    assert G.nodes[fy]["name"] == "AddBackward0"
    assert G.nodes[fy]["op"] == "op:1"
    assert not G.nodes[y0]["is_leaf"]
    (acc,) = [v for _, v, _ in edges(G, "next", fy)]
    assert G.nodes[acc]["name"] == "AccumulateGrad"
    assert edges(G, "accumulates", acc, x0)
    assert G.nodes[G.nodes[o0]["grad_fn"]]["name"] == "MeanBackward0"


def test_2_1_requires_grad_is_false_by_default_and_requires_grad_makes_a_new_version():
    with gradtrace.trace() as tr:
        a = torch.randn(2, 2)
        a = (a * 3) / (a - 1)
        a.requires_grad_(True)
        b = (a * a).sum()
    G = tr.graph
    first, second = [n for n in tensors(G, "a") if G.nodes[n]["tid"] == G.nodes[tensors(G, "a")[-1]]["tid"]]
    assert not G.nodes[first]["requires_grad"] and G.nodes[second]["requires_grad"]
    (e,) = edges(G, "next_version", first, second)
    assert e[2]["metadata_only"]
    assert G.nodes[tensors(G, "b")[0]]["requires_grad"]


def test_2_2_out_backward_records_an_implicit_weight_and_x_grad_is_4_5():
    with gradtrace.trace() as tr:
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        out = (y * y * 3).mean()
        out.backward()
    G = tr.graph
    (bw, bd) = next((n, d) for n, d in G.nodes(data=True) if d["kind"] == "backward")
    assert bd["implicit"] and bd["api"] == "Tensor.backward"
    (w,) = edges(G, "weights", bw)
    assert w[1] == tensors(G, "out")[0] and w[2]["gradient"] is None
    assert w[2]["received"]["stats"]["mean"] == 1.0
    (lg,) = edges(G, "leaf_grad", bw)
    assert lg[2]["stats"]["min"] == lg[2]["stats"]["max"] == 4.5


def test_2_2_backward_with_an_explicit_one_equals_the_implicit_call():
    def run(explicit):
        with gradtrace.trace() as tr:
            x = torch.ones(2, 2, requires_grad=True)
            out = ((x + 2) ** 2 * 3).mean()
            out.backward(torch.tensor(1.0)) if explicit else out.backward()
        return tr.graph

    g1, g2 = run(False), run(True)
    lg1 = edges(g1, "leaf_grad")[0][2]["stats"]
    lg2 = edges(g2, "leaf_grad")[0][2]["stats"]
    assert lg1 == lg2
    w2 = edges(g2, "weights")[0][2]
    assert w2["gradient"] is not None and g2.nodes[w2["gradient"]]["stats"]["mean"] == 1.0


def test_2_2_1_weighting_vector_is_recorded_and_reaches_2x_flattened():
    with gradtrace.trace(values="all") as tr:
        x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        y = 2 * x
        z = y.view(2, 2)
        v = torch.tensor([[1.0, 0.1], [0.01, 0.001]], dtype=torch.float)
        z.backward(v)
    G = tr.graph
    (w,) = edges(G, "weights")
    assert w[2]["gradient"] == tensors(G, "v")[0]
    (y0,) = tensors(G, "y")
    (g,) = [d for _, _, d in edges(G, "grad", v=y0)]
    assert torch.equal(tr.values[g["value"]], v.flatten())
    (lg,) = edges(G, "leaf_grad")
    assert torch.equal(tr.values[lg[2]["value"]], torch.tensor([2.0, 0.2, 0.02, 0.002]))


def test_2_2_1_weighting_vector_passed_by_keyword_and_through_autograd_backward():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        y = x * 2
        y.backward(gradient=torch.full((3,), 0.5))
        y2 = x * 3
        torch.autograd.backward(y2, grad_tensors=torch.full((3,), 2.0))
        g, = torch.autograd.grad((x * 4).sum(), x)
    G = tr.graph
    bws = sorted((d["seq"], n, d["api"]) for n, d in G.nodes(data=True) if d["kind"] == "backward")
    assert [a for _, _, a in bws] == ["Tensor.backward", "torch.autograd.backward", "torch.autograd.grad"]
    means = [G.nodes[edges(G, "weights", n)[0][2]["gradient"]]["stats"]["mean"] for _, n, _ in bws[:2]]
    assert means == [0.5, 2.0]
    assert G.nodes[bws[2][1]]["implicit"]
    (gx,) = [d for _, v, d in edges(G, "grad", bws[2][1]) if v == tensors(G, "x")[0]]
    assert gx["stats"]["mean"] == 4.0


def test_2_2_1_starting_from_an_inner_node_with_dl_dn_gives_the_same_leaf_gradient():
    with gradtrace.trace() as tr:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        n = x * x
        out = (n * 3).sum()
        out.backward(retain_graph=True)
        full = x.grad.clone()
        x.grad = None
        n.backward(torch.full((2,), 3.0))
    G = tr.graph
    (n0,) = tensors(G, "n")
    first_bw_grad_at_n = grad_reaching(G, n0)[0]
    assert first_bw_grad_at_n["mean"] == 3.0  # dl/dn
    lgs = [d["stats"] for _, _, d in edges(G, "leaf_grad")]
    assert lgs[0] == lgs[1]
    assert full.tolist() == [6.0, 12.0]


def test_2_2_no_grad_is_recorded_on_every_op_and_y2_has_no_grad_fn():
    with gradtrace.trace() as tr:
        x = torch.tensor(1.0, requires_grad=True)
        y1 = x ** 2
        with torch.no_grad():
            y2 = x ** 3
        y3 = y1 + y2
        y3.backward()
    G = tr.graph
    pows = ops(G, "Tensor.__pow__")
    assert [d["grad_enabled"] for d in pows] == [True, False]
    modes = ops(G, category="grad_mode")
    assert [(d["name"], d["args"]) for d in modes] == [("torch.no_grad", "False"), ("torch.no_grad", "True")]
    (y2,) = tensors(G, "y2")
    assert G.nodes[y2]["grad_fn"] is None and not G.nodes[y2]["requires_grad"]
    assert edges(G, "leaf_grad")[0][2]["stats"]["mean"] == 2.0


def test_2_2_data_write_is_invisible_to_autograd_and_the_gradient_stays_2():
    with gradtrace.trace() as tr:
        x = torch.ones(1, requires_grad=True)
        y = 2 * x
        x.data *= 100
        y.backward()
    G = tr.graph
    (data_op,) = ops(G, "Tensor.data")
    alias = outputs(G, data_op)[0]
    (view,) = edges(G, "view_of", alias)
    assert view[2]["alias"] == "data" and view[1] == tensors(G, "x")[0]
    x0, x1 = tensors(G, "x")
    (e,) = edges(G, "next_version", x0, x1)
    assert e[2]["visible"] is False
    assert G.nodes[x1]["stats"]["mean"] == 100.0
    assert edges(G, "leaf_grad")[0][2]["stats"]["mean"] == 2.0


def test_gradients_accumulate_across_backward_calls_in_leaf_grad():
    with gradtrace.trace() as tr:
        x = torch.ones(2, requires_grad=True)
        (x * 2).sum().backward()
        (x * 2).sum().backward()
    G = tr.graph
    lgs = sorted(edges(G, "leaf_grad"), key=lambda e: G.nodes[e[0]]["seq"])
    assert [e[2]["stats"]["mean"] for e in lgs] == [2.0, 4.0]
    assert [e[2]["accumulated"] for e in lgs] == [False, True]


def test_saved_tensors_are_recorded_on_their_autograd_node():
    with gradtrace.trace() as tr:
        a = torch.ones(3, requires_grad=True)
        b = a.exp()
        c = a * b
    G = tr.graph
    fn_c = G.nodes[tensors(G, "c")[0]]["grad_fn"]
    assert {v for _, v, _ in edges(G, "saves", fn_c)} == {tensors(G, "a")[0], tensors(G, "b")[0]}
    fn_b = G.nodes[tensors(G, "b")[0]]["grad_fn"]
    assert {v for _, v, _ in edges(G, "saves", fn_b)} == {tensors(G, "b")[0]}  # exp saves its result


def test_custom_function_backward_ops_are_recorded_in_the_backward_phase():
    with gradtrace.trace() as tr:
        x = torch.ones(2, requires_grad=True)
        Square.apply(x).sum().backward()
    G = tr.graph
    back_ops = [d for d in ops(G) if d["phase"] == "backward"]
    assert [d["name"] for d in back_ops] == ["Tensor.mul", "Tensor.mul"]
    assert all(d["during"] == "bw:0" for d in back_ops)
