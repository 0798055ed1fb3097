"""Section 1 of the course notes (tensors): one test per lesson, asserting the graph
facts that ../shared/design/seed-map.md names."""

import numpy as np
import torch
from helpers import edges, inputs, ops, outputs, tensors

import gradtrace


def test_1_1_factories_record_dtype_shape_device_and_random_draws():
    with gradtrace.trace() as tr:
        x = torch.rand(4, 3)
        x = torch.zeros(4, 3, dtype=torch.long)
        x = torch.tensor([5, 5, 3])
        x = x.new_ones(4, 3, dtype=torch.double)
        x = torch.randn_like(x, dtype=torch.float)
        e = torch.empty(4, 3)
        del e
    G = tr.graph
    names = [d["name"] for d in ops(G)]
    assert names == ["torch.rand", "torch.zeros", "torch.tensor", "Tensor.new_ones",
                     "torch.randn_like", "torch.empty"]
    assert all(d["category"] == "factory" for d in ops(G))
    zeros = G.nodes[outputs(G, ops(G, "torch.zeros")[0])[0]]
    assert (zeros["dtype"], zeros["shape"], zeros["device"]) == ("int64", [4, 3], "cpu")
    new_ones = G.nodes[outputs(G, ops(G, "Tensor.new_ones")[0])[0]]
    assert new_ones["dtype"] == "float64"
    assert [d.get("random", False) for d in ops(G)] == [True, False, False, False, True, False]


def test_1_2_1_add_out_and_inplace_are_told_apart():
    with gradtrace.trace() as tr:
        x = torch.rand(4, 3)
        y = torch.rand(4, 3)
        s = x + y
        s2 = torch.add(x, y)
        result = torch.empty(5, 3)
        torch.add(x, y, out=result)
        y.add_(x)
        del s, s2
    G = tr.graph
    cats = {d["name"] + ("(out)" if "out=" in d["args"] or d["category"] == "out" else ""): d["category"]
            for d in ops(G)}
    assert cats["Tensor.add"] == "compute"
    assert cats["torch.add(out)"] == "out"
    assert cats["Tensor.add_"] == "inplace"


def test_1_2_1_out_resized_from_5x3_to_4x3_is_a_new_version_with_the_new_shape():
    with gradtrace.trace() as tr:
        x, y = torch.rand(4, 3), torch.rand(4, 3)
        result = torch.empty(5, 3)
        torch.add(x, y, out=result)
    G = tr.graph
    v0, v1 = tensors(G, "result")
    assert G.nodes[v0]["shape"] == [5, 3] and G.nodes[v1]["shape"] == [4, 3]
    (edge,) = edges(G, "next_version", v0, v1)
    assert G.nodes[edge[2]["op"]]["category"] == "out"


def test_1_2_2_indexing_gives_a_view_that_writes_through_to_x():
    with gradtrace.trace() as tr:
        x = torch.zeros(4, 3)
        y = x[0, :]
        y += 1
    G = tr.graph
    y0, y1 = tensors(G, "y")
    x0, x1 = tensors(G, "x")
    assert edges(G, "view_of", y0, x0)
    assert G.nodes[y0]["storage"] == G.nodes[x0]["storage"]
    assert len({d["storage"] for _, d in G.nodes(data=True) if d["kind"] == "tensor"}) == 1
    (ey,) = edges(G, "next_version", y0, y1)
    (ex,) = edges(G, "next_version", x0, x1)
    assert ey[2]["op"] == ex[2]["op"]
    assert G.nodes[ey[2]["op"]]["category"] == "inplace"
    assert G.nodes[x1]["stats"]["max"] == 1.0  # x changed through y


def test_1_2_3_view_shares_memory_and_reshape_copies_a_transposed_tensor():
    with gradtrace.trace() as tr:
        x = torch.rand(4, 3)
        v = x.view(12)
        r = x.reshape(12)
        rt = x.t().reshape(12)
    G = tr.graph
    assert G.nodes[tensors(G, "v")[0]]["storage"] == G.nodes[tensors(G, "x")[0]]["storage"]
    reshapes = ops(G, "Tensor.reshape")
    assert [d["category"] for d in reshapes] == ["view", "compute"]
    assert G.nodes[tensors(G, "r")[0]]["storage"] == G.nodes[tensors(G, "x")[0]]["storage"]
    assert G.nodes[tensors(G, "rt")[0]]["storage"] != G.nodes[tensors(G, "x")[0]]["storage"]
    del v, r, rt


def test_1_2_3_clone_copies_and_stays_in_the_autograd_graph():
    with gradtrace.trace() as tr:
        x = torch.ones(4, 3, requires_grad=True)
        y = torch.clone(x)
        y = y.view(-1, 2)
    G = tr.graph
    (clone,) = ops(G, "torch.clone")
    assert clone["category"] == "compute"
    out = G.nodes[outputs(G, clone)[0]]
    assert out["storage"] != G.nodes[tensors(G, "x")[0]]["storage"]
    assert G.nodes[out["grad_fn"]]["name"] == "CloneBackward0"


def test_1_2_3_item_is_an_op_on_the_scalar():
    with gradtrace.trace() as tr:
        x = torch.randn(1)
        x.item()
    G = tr.graph
    (item,) = ops(G, "Tensor.item")
    assert inputs(G, item) == tensors(G, "x")


def test_1_3_broadcasting_records_input_and_output_shapes():
    with gradtrace.trace() as tr:
        x = torch.arange(1, 3).view(1, 2)
        y = torch.arange(1, 4).view(3, 1)
        z = x + y
    G = tr.graph
    (add,) = ops(G, "Tensor.add")
    assert sorted(G.nodes[n]["shape"] for n in inputs(G, add)) == [[1, 2], [3, 1]]
    assert G.nodes[tensors(G, "z")[0]]["shape"] == [3, 2]


def test_1_4_y_equals_y_plus_x_allocates_while_the_other_three_reuse_memory():
    with gradtrace.trace() as tr:
        x = torch.tensor([1, 2])
        y = torch.tensor([3, 4])
        y = y + x
        y[:] = y + x
        torch.add(x, y, out=y)
        y += x
    G = tr.graph
    first, second = tensors(G, "y")[0], tensors(G, "y")[1]
    assert G.nodes[first]["storage"] != G.nodes[second]["storage"]  # y = y + x
    writes = [G.nodes[d["op"]]["category"] for _, _, d in edges(G, "next_version")]
    assert writes == ["setitem", "out", "inplace"]
    ys = [n for n in tensors(G, "y") if G.nodes[n]["tid"] == G.nodes[second]["tid"]]
    assert len({G.nodes[n]["storage"] for n in ys}) == 1 and len(ys) == 4


def test_1_5_numpy_and_from_numpy_share_memory_and_torch_tensor_copies():
    with gradtrace.trace() as tr:
        a = torch.ones(5)
        b = a.numpy()
        arr = np.ones(5)
        t = torch.from_numpy(arr)
        c = torch.tensor(arr)
        del b
    G = tr.graph
    shares = edges(G, "shares_memory")
    assert {v for _, v, _ in shares} == {tensors(G, "a")[0], tensors(G, "t")[0]}
    assert [d["category"] for d in ops(G)] == ["factory", "numpy", "numpy", "factory"]
    assert G.nodes[G.nodes[tensors(G, "t")[0]]["storage"]]["origin"] == "numpy"
    assert not any(v == tensors(G, "c")[0] for _, v, _ in shares)
    del c


def test_1_5_a_numpy_side_write_is_seen_as_a_write_to_the_tensor():
    with gradtrace.trace() as tr:
        arr = np.ones(5)
        t = torch.from_numpy(arr)
        arr += 1
        s = t.sum()
    G = tr.graph
    t0, t1 = tensors(G, "t")
    (e,) = edges(G, "next_version", t0, t1)
    assert e[2]["external"] is True and e[2]["op"] is None
    assert G.nodes[t1]["stats"]["min"] == 2.0
    del s


def test_1_5_a_tensor_side_write_changes_the_numpy_array():
    with gradtrace.trace() as tr:
        a = torch.ones(5)
        b = a.numpy()
        a += 1
    G = tr.graph
    a0, a1 = tensors(G, "a")
    assert edges(G, "next_version", a0, a1)
    (np_node,) = [u for u, v, _ in edges(G, "shares_memory") if v == a0]
    assert G.nodes[np_node]["kind"] == "numpy"
    assert b[0] == 2.0


def test_1_6_to_moves_between_devices_and_to_the_same_device_returns_the_same_tensor():
    with gradtrace.trace() as tr:
        x = torch.tensor([1, 2])
        same = x.to("cpu")
        meta = x.to("meta")
        dbl = x.to("cpu", torch.double)
        del same, meta, dbl
    G = tr.graph
    moves = edges(G, "moved_to")
    by_dst = {(d["dst_device"], d["dst_dtype"]): d for _, _, d in moves}
    assert by_dst[("cpu", "int64")]["copy"] is False
    assert by_dst[("meta", "int64")]["copy"] is True
    assert by_dst[("cpu", "float64")]["copy"] is True
    assert [d["category"] for d in ops(G, "Tensor.to")] == ["move", "move", "convert"]
