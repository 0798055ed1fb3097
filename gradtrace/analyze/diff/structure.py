"""How the two runs' op sequences differ: ops only one run made, ``.to()`` calls
that copied in one run and aliased in the other (and whether a later write makes
that matter), and the all-reduce buckets of each."""

from __future__ import annotations

from .runs import LIST_LIMIT, Run

__all__ = ["structure_differences"]


def structure_differences(ra: Run, rb: Run, pairs, how) -> dict:
    """Return the report's ``structure`` section: op counts, how many were aligned by
    key and by sequence, the ops only in A or only in B, aliasing differences and the
    collectives of each run."""
    pa = {a for a, _ in pairs}
    pb = {b for _, b in pairs}
    only_a = [ra.op_text(n) for n, _ in ra.ops if n not in pa]
    only_b = [rb.op_text(n) for n, _ in rb.ops if n not in pb]
    return {
        "ops": [len(ra.ops), len(rb.ops)],
        "aligned_by_key": sum(1 for v in how.values() if v == "key"),
        "aligned_by_sequence": sum(1 for v in how.values() if v == "sequence"),
        "only_a": only_a[:LIST_LIMIT], "only_a_count": len(only_a),
        "only_b": only_b[:LIST_LIMIT], "only_b_count": len(only_b),
        "noop_moves": [o for o in only_a + only_b if o["category"] in ("move", "convert")][:LIST_LIMIT],
        "aliasing": _aliasing(ra, rb, pairs),
        "collectives": [_collectives(ra), _collectives(rb)],
    }


def _collectives(r: Run) -> list:
    return [{"id": n, **{k: d.get(k) for k in ("op", "bucket", "numel", "params", "world_size", "rank")}}
            for n, d in r.collectives]


def _aliasing(ra: Run, rb: Run, pairs) -> list:
    """Aligned ``.to()`` calls that copied in one run and returned the same tensor in
    the other, with the first later write to the aliased storage."""
    aliasing, seen = [], {}
    for a, b in pairs:
        oa, ob = ra.outputs.get(a, []), rb.outputs.get(b, [])
        if not oa or not ob:
            continue
        ma, mb = ra.moves.get(oa[0][1]), rb.moves.get(ob[0][1])
        if ma is None or mb is None or ma[1].get("copy") == mb[1].get("copy"):
            continue
        r, out_t = (ra, oa[0][1]) if not ma[1].get("copy") else (rb, ob[0][1])
        write = _later_write(r, out_t, r.G.nodes[a if r is ra else b]["seq"])
        entry = {
            "op": ra.op_text(a), "copy": [bool(ma[1].get("copy")), bool(mb[1].get("copy"))],
            "devices": [f"{ma[1].get('src_device')}->{ma[1].get('dst_device')}",
                        f"{mb[1].get('src_device')}->{mb[1].get('dst_device')}"],
            "same_tensor_in": ra.G.graph.get("target") if r is ra else rb.G.graph.get("target"),
            "written_after": write, "meaning_changes": write is not None, "count": 1,
        }
        key = _aliasing_key(entry)
        if key in seen:  # the same line in a loop: one entry, counted
            seen[key]["count"] += 1
        else:
            seen[key] = entry
            aliasing.append(entry)
    return aliasing


def _aliasing_key(e):
    o, w = e["op"], e["written_after"] or {}
    return (o.get("name"), o.get("file"), o.get("line"), tuple(e["copy"]), tuple(e["devices"]),
            w.get("file"), w.get("line"))


def _later_write(r: Run, t, after_seq):
    """The first write (a later ``next_version``) to tensor ``t``'s storage after op ``after_seq``."""
    G = r.G
    sid = G.nodes[t].get("storage")
    best = None
    for u, v, d in G.edges(data=True):
        if d.get("kind") != "next_version" or not d.get("op") or d.get("metadata_only"):
            continue
        if G.nodes[u].get("storage") != sid:
            continue
        s = G.nodes[d["op"]].get("seq", -1)
        if s > after_seq and (best is None or s < best[0]):
            best = (s, d["op"])
    return r.op_text(best[1]) if best else None
