"""Recorder facts beyond the course notes: aliases, storage identity, grad modes, ops."""


import pytest
import torch
from helpers import TESTS, edges, ops, outputs, tensors

import gradtrace


def test_detach_is_an_alias_that_shares_the_version_counter():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        y = x * 2
        d = y.detach()
        d += 1
    G = tr.graph
    (v,) = edges(G, "view_of", tensors(G, "d")[0])
    assert v[2]["alias"] == "detach" and v[1] == tensors(G, "y")[0]
    y0, y1 = tensors(G, "y")
    assert edges(G, "next_version", y0, y1)[0][2]["visible"] is True


def test_storage_identity_survives_the_allocator_reusing_an_address():
    pointers = []
    with gradtrace.trace() as tr:
        for i in range(20):
            t = torch.full((256,), float(i))
            pointers.append(t.data_ptr())
            del t
    assert len(set(pointers)) < len(pointers)  # the allocator handed an address out again
    G = tr.graph
    fulls = ops(G, "torch.full")
    storages = [G.nodes[outputs(G, d)[0]]["storage"] for d in fulls]
    assert len(set(storages)) == len(storages) == 20


def test_every_grad_mode_is_recorded_and_set_on_each_op():
    with gradtrace.trace() as tr:
        x = torch.ones(2, requires_grad=True)
        with torch.no_grad():
            with torch.enable_grad():
                a = x * 2
            b = x * 3
        torch.set_grad_enabled(False)
        c = x * 4
        torch.set_grad_enabled(True)
        with torch.inference_mode():
            d = torch.ones(2) * 5
    G = tr.graph
    muls = [(d_["grad_enabled"]) for d_ in ops(G) if d_["name"] == "Tensor.mul"]
    assert muls == [True, False, False, False]
    modes = [d_["name"] for d_ in ops(G, category="grad_mode")]
    assert modes == ["torch.no_grad", "torch.enable_grad", "torch.enable_grad", "torch.no_grad",
                     "torch.set_grad_enabled", "torch.set_grad_enabled",
                     "torch.inference_mode", "torch.inference_mode"]
    assert G.nodes[tensors(G, "a")[0]]["requires_grad"] and not G.nodes[tensors(G, "b")[0]]["requires_grad"]


def test_optimizer_internal_grad_mode_switches_are_not_user_ops():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    with gradtrace.trace() as tr:
        p.sum().backward()
        opt.step()
    assert ops(tr.graph, category="grad_mode") == []


def test_source_line_and_code_point_at_the_users_line():
    with gradtrace.trace() as tr:
        x = torch.ones(2)
        y = torch.nn.functional.relu(x - 1)  # the line
    G = tr.graph
    relu = ops(G, "torch.nn.functional.relu")[0]
    assert relu["file"] == __file__ and relu["code"].endswith("# the line")


def test_shape_and_dtype_metadata_reads_are_not_ops():
    with gradtrace.trace() as tr:
        x = torch.ones(2, 3)
        x.shape, x.dtype, x.dim(), x.size(0), x.is_leaf, x.grad_fn, x.requires_grad
    assert [d["name"] for d in ops(tr.graph)] == ["torch.ones"]


def test_tuple_unpacking_labels_each_output():
    with gradtrace.trace() as tr:
        x = torch.arange(6.0)
        left, right = x.chunk(2)
    G = tr.graph
    assert tensors(G, "left") and tensors(G, "right")
    assert all(edges(G, "view_of", tensors(G, n)[0]) for n in ("left", "right"))


def test_matmul_assign_arrives_as_an_out_of_place_matmul():
    with gradtrace.trace() as tr:
        m = torch.eye(2)
        m @= torch.eye(2)
    (mm,) = ops(tr.graph, "Tensor.matmul")
    assert mm["category"] == "compute"


def test_values_all_keeps_each_tensor_version_and_saves_it(tmp_path):
    with gradtrace.trace(values="all") as tr:
        x = torch.zeros(3)
        x += 2
    x0, x1 = tensors(tr.graph, "x")
    assert torch.equal(tr.values[x0], torch.zeros(3)) and torch.equal(tr.values[x1], torch.full((3,), 2.0))
    tr.save(tmp_path / "run")
    back = gradtrace.load(tmp_path / "run")
    assert torch.equal(back.values[x1], torch.full((3,), 2.0))
    assert (tmp_path / "run" / "values.safetensors").exists()


def _unchanged_then_changed():
    with gradtrace.trace(values="all") as tr:
        x = torch.ones(1000)
        x.mul_(1.0)  # a write that leaves the value as it was
        x.add_(1.0)
    return tr


def test_values_all_shares_one_copy_for_a_version_whose_value_did_not_change():
    tr = _unchanged_then_changed()
    v0, v1, v2 = (tr.values[f"t:0.{k}"] for k in range(3))
    assert v1 is v0 and v2 is not v0 and tr.meta["values_kept"]["shared"] == 1


def test_a_shared_copy_is_written_once_and_loads_under_both_keys(tmp_path):
    tr = _unchanged_then_changed()
    tr.save(tmp_path / "t")
    back = gradtrace.load(tmp_path / "t")
    assert torch.equal(back.values["t:0.1"], torch.ones(1000))
    assert (tmp_path / "t" / "values.safetensors").stat().st_size < 2 * 1000 * 4 + 1024


def test_values_all_stops_copying_at_its_limit_and_says_so():
    with gradtrace.trace(values="all", values_max=10_000) as tr:
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(1000) * 2
        c = torch.ones(1000) * 3  # past 10,000 bytes: not kept
    kept = tr.meta["values_kept"]
    assert kept["bytes"] <= 10_000 and kept["skipped"] >= 1 and kept["limit"] == 10_000
    assert tensors(tr.graph, "c")[0] not in tr.values


def test_stats_count_nan_and_inf_and_min_and_max_count_the_inf_not_the_nan():
    with gradtrace.trace() as tr:
        x = torch.tensor([1.0, float("nan"), float("inf"), -2.0])
    s = tr.graph.nodes[tensors(tr.graph, "x")[0]]["stats"]
    assert (s["nan"], s["inf"], s["min"], s["max"]) == (1, 1, -2.0, float("inf"))


def test_the_min_of_a_minus_inf_mask_is_minus_inf():
    with gradtrace.trace() as tr:
        mask = torch.log(torch.tril(torch.ones(4, 4)))
    s = tr.graph.nodes[tensors(tr.graph, "mask")[0]]["stats"]
    assert (s["min"], s["max"], s["inf"]) == (float("-inf"), 0.0, 6)


def test_math_settings_are_recorded():
    with gradtrace.trace() as tr:
        torch.ones(1)
    m = tr.graph.graph["math"]
    assert m["default_dtype"] == "float32"
    assert m["deterministic_algorithms"] is False
    assert {"tf32_matmul", "tf32_cudnn", "cudnn_benchmark", "autocast_cpu", "seed"} <= set(m)


def test_a_nonleaf_grad_read_is_recorded():
    with gradtrace.trace() as tr:
        x = torch.ones(2, requires_grad=True)
        y = x * 2
        y.sum().backward()
        _ = y.grad
    (read,) = tr.graph.graph["grad_reads"]
    assert read["tensor"] == tensors(tr.graph, "y")[0] and read["line"] is not None


def test_setitem_with_a_tensor_index_records_the_index_as_an_input():
    with gradtrace.trace() as tr:
        x = torch.zeros(4)
        idx = torch.tensor([0, 2])
        x[idx] = 1.0
    (st,) = ops(tr.graph, "Tensor.__setitem__")
    assert st["category"] == "setitem"
    ins = [u for u, _, k in tr.graph.in_edges(f"op:{st['seq']}", data="kind") if k == "input"]
    assert tensors(tr.graph, "idx")[0] in ins


def test_outputs_of_a_random_factory_are_marked_random():
    with gradtrace.trace() as tr:
        torch.randn(3)
        torch.nn.functional.dropout(torch.ones(3), 0.5)
    assert [d.get("random", False) for d in ops(tr.graph)] == [True, False, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_move_is_a_copy_and_cuda_stats_are_read_at_the_end():
    with gradtrace.trace() as tr:
        x = torch.ones(3)
        g = x.cuda()
        back = g.to("cpu", torch.double)
    G = tr.graph
    moves = edges(G, "moved_to")
    assert [m[2]["dst_device"] for m in moves] == ["cuda:0", "cpu"]
    assert G.nodes[tensors(G, "g")[0]]["stats"]["mean"] == 1.0


def test_op_outputs_are_listed_in_order():
    with gradtrace.trace() as tr:
        values, idx = torch.tensor([3.0, 1.0, 2.0]).sort()
    (sort,) = ops(tr.graph, "Tensor.sort")
    outs = outputs(tr.graph, sort)
    assert sorted(tr.graph.nodes[n]["label"] for n in outs) == ["idx", "values"]


def test_an_inplace_write_on_a_view_rewires_the_base_to_copyslices():
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        y = x.clone()
        v = y[:2]
        v.mul_(2)
        y.sum().backward()
    G = tr.graph
    y0, y1 = tensors(G, "y")
    assert G.nodes[G.nodes[y0]["grad_fn"]]["name"] == "CloneBackward0"
    assert G.nodes[G.nodes[y1]["grad_fn"]]["name"] == "CopySlices"
    (lg,) = edges(G, "leaf_grad")
    assert lg[2]["stats"]["max"] == 2.0 and lg[2]["stats"]["min"] == 1.0


def test_the_notes_example_scripts_trace_with_status_ok():

    from gradtrace.runner import run_script

    root = TESTS.parent / "examples"
    for name in ("tensors.py", "autograd.py"):
        result = run_script(root / name, values="stats")
        assert result.exit_code == 0
        G = result.trace.graph
        assert G.graph["status"] == "ok" and G.graph["script"].endswith(name)
        assert all(d.get("file", "").endswith(name) for _, d in G.nodes(data=True)
                   if d["kind"] == "op" and d.get("file"))


def test_statistics_of_huge_values_neither_overflow_nor_warn(recwarn):
    big = torch.full((200,), 1e200, dtype=torch.float64)
    with gradtrace.trace() as tr:
        x = big * 1
    s = tr.graph.nodes[tensors(tr.graph, "x")[0]]["stats"]
    assert s["norm"] == pytest.approx(1e200 * 200 ** 0.5)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_parameters_keep_their_module_names_when_the_model_is_moved_in_one_statement():
    with gradtrace.trace() as tr:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).to("cpu")
        out = model(torch.randn(3, 2))
    G = tr.graph
    params = {d["label"]: d["param_kind"] for _, d in G.nodes(data=True)
              if d["kind"] == "tensor" and d.get("param_kind")}
    assert params == {"Sequential.0.weight": "parameter", "Sequential.0.bias": "parameter",
                      "Sequential.1.weight": "parameter", "Sequential.1.bias": "parameter",
                      "Sequential.1.running_mean": "buffer", "Sequential.1.running_var": "buffer",
                      "Sequential.1.num_batches_tracked": "buffer"}
    assert tensors(G, "model") == [] and tensors(G, "out")


def test_every_write_is_also_an_edge_from_the_op_to_the_storage():
    with gradtrace.trace() as tr:
        x = torch.zeros(4)
        x[1:3] += 1
    G = tr.graph
    writes = edges(G, "writes")  # `+=` on the slice, then Python's store back into x[1:3]
    assert {w[1] for w in writes} == {G.nodes[tensors(G, "x")[0]]["storage"]}
    assert [G.nodes[w[0]]["category"] for w in writes] == ["inplace", "setitem"]


def test_requires_grad_is_a_metadata_op_not_a_compute_op():
    with gradtrace.trace() as tr:
        w = torch.ones(2)
        w.requires_grad_(True)
    (op,) = ops(tr.graph, "Tensor.requires_grad_")
    assert op["category"] == "metadata"


def test_requires_grad_is_not_a_write_invisible_to_autograd():
    with gradtrace.trace() as tr:
        w = torch.ones(2)
        w.requires_grad_(True)
    G = tr.graph
    (e,) = edges(G, "next_version")
    assert e[2]["metadata_only"] and e[2]["visible"] is True
