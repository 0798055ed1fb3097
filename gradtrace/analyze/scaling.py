"""Loss scaling as a trace holds it: the ``loss_scale`` nodes of a program's
``GradScaler.update`` calls, and the product ``GradScaler.scale`` makes."""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["NEVER", "RAN", "RECOVERED", "is_scaled_product", "loss_root", "scale_after", "scaler_line", "scaler_note", "scaler_summary",
           "scaler_updates"]


def scaler_updates(G) -> list:
    """The trace's loss scaler updates (``loss_scale`` node attributes), in call order;
    [] for a program that scales no loss."""
    return sorted((d for d in G._node.values() if d.get("kind") == "loss_scale"), key=lambda d: d["seq"])


def is_scaled_product(d) -> bool:
    """Whether op ``d`` (its attributes) may be ``GradScaler.scale``'s multiplication:
    torch's own ``Tensor.mul``, outside any module (asked of a program that scales)."""
    return d.get("name") == "Tensor.mul" and d.get("direct") is False and not d.get("module")


def loss_root(G, root):
    """The loss a loss scaler multiplied into backward root ``root`` (the first input of
    :func:`is_scaled_product`'s op that made it), else ``root``."""
    N = G._node
    for op, keyed in G._pred[root].items():
        d = N[op]
        if d.get("kind") == "op" and any(e.get("kind") == "output" for e in keyed.values()):
            if not is_scaled_product(d):
                return root
            return next((t for t, ks in G._pred[op].items()
                         if any(e.get("kind") == "input" and e.get("pos") == 0 for e in ks.values())), root)
    return root


def scale_after(updates: list, seq: int, seqs=None):
    """The scale of the first of ``updates`` after op ``seq`` (the scale the gradients
    of a backward call at ``seq`` were made with), or None; ``seqs``: the updates'
    ``seq``, for a caller that asks of many calls."""
    i = bisect_right(seqs if seqs is not None else [d["seq"] for d in updates], seq)
    return updates[i].get("scale") if i < len(updates) else None


RAN, RECOVERED, NEVER = "ran", "recovered", "never"  # what the scaler did after a NaN/Inf


def scaler_note(updates: list, seq: int):
    """``(outcome, text)`` for a NaN/Inf made at op ``seq`` of a program whose scaler
    updates are ``updates``: :data:`RAN` (the update after it ran), :data:`RECOVERED`
    (the scaler skipped it and a later update ran: the overflow of a scale still too
    large) or :data:`NEVER` (it skipped every update from there); ``text`` says so.
    None where no update follows."""
    i = bisect_right([d["seq"] for d in updates], seq)
    if i == len(updates):
        return None
    d = updates[i]
    if not d.get("skipped"):
        return RAN, f"the loss scaler's update after it ran (scale {_g(d.get('scale'))})"
    later = next((j for j in range(i + 1, len(updates)) if updates[j].get("skipped") is False), None)
    text = f"the loss scaler skipped the update after it (scale {_g(d.get('scale'))} -> {_g(d.get('new_scale'))})"
    if later is None:
        return NEVER, text + f" and every update after it ({len(updates) - i} in all): lowering the scale did not cure it"
    return RECOVERED, text + (f" and ran again {later - i} update(s) later: an overflow of a scale still too large, "
                              "which the scaler handles")


def scaler_summary(updates: list):
    """``{updates, skipped, first_scale, last_scale}`` of a program's loss scaler
    updates (``last_scale``: the scale the last update set); None without any."""
    if not updates:
        return None
    return {"updates": len(updates), "skipped": sum(1 for d in updates if d.get("skipped")),
            "first_scale": updates[0].get("scale"), "last_scale": updates[-1].get("new_scale")}


def scaler_line(s: dict) -> str:
    """The run report's line on a :func:`scaler_summary`."""
    return (f"loss scaler: {s['updates']} update{'s' if s['updates'] != 1 else ''}, {s['skipped']} skipped "
            f"for NaN/Inf in the scaled gradients (scale {_g(s['first_scale'])} -> {_g(s['last_scale'])})")


def _g(v) -> str:
    return "?" if v is None else f"{v:.4g}"
