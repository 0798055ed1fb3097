"""Autocast, recorded per op, and the casts it makes recorded as dtype moves."""

import torch
from helpers import edges, ops, outputs, tensors

import gradtrace
from gradtrace.analyze.summary import summarize


def _program():
    with gradtrace.trace() as tr:
        a = torch.ones(2, 3)
        b = torch.ones(3, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = a @ b
        d = c.float() + 1
    return tr.graph


def test_an_op_inside_an_autocast_region_records_the_region():
    G = _program()
    (mm,) = ops(G, "Tensor.matmul")
    assert mm["autocast"] == {"cpu": "bfloat16"}


def test_an_op_outside_every_autocast_region_has_no_autocast_attribute():
    G = _program()
    (add,) = ops(G, "Tensor.add")
    assert "autocast" not in add


def test_each_input_autocast_casts_is_a_dtype_move_to_the_result():
    G = _program()
    (mm,) = ops(G, "Tensor.matmul")
    (c,) = outputs(G, mm)
    casts = {(u, d["src_dtype"], d["dst_dtype"]) for u, _, d in edges(G, "moved_to", v=c) if d.get("autocast")}
    assert casts == {(tensors(G, "a")[0], "float32", "bfloat16"), (tensors(G, "b")[0], "float32", "bfloat16")}


def test_an_autocast_cast_names_the_op_that_made_it():
    G = _program()
    (mm,) = ops(G, "Tensor.matmul")
    assert {d["op"] for _, _, d in edges(G, "moved_to") if d.get("autocast")} == {f"op:{mm['seq']}"}


def test_the_moves_summary_lists_the_autocast_casts():
    G = _program()
    moves = summarize(G)["moves"]
    assert sum(m["src"] == "cpu/float32" and m["dst"] == "cpu/bfloat16" for m in moves) == 2


def test_an_op_autocast_leaves_alone_records_no_cast():
    with gradtrace.trace() as tr:
        a = torch.ones(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = a + 1
    G = tr.graph
    assert not edges(G, "moved_to")


def test_a_backward_call_inside_an_autocast_region_records_the_region():
    with gradtrace.trace() as tr:
        w = torch.ones(3, 3, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (w @ w).float().sum()
            loss.backward()
    (bw,) = ops(tr.graph, category="backward")
    assert bw["autocast"] == {"cpu": "bfloat16"}
