"""Pictures of a trace a person can read: which ops a view shows (:mod:`.steps`),
how modules, parameters and repeated blocks fold (:mod:`.fold`), the canvas and label
helpers the static views share (:mod:`.picture`), the views themselves
(:mod:`.forward` with :mod:`.flow`, :mod:`.autograd`, :mod:`.memory`), and the DOT
text and its rendering (:mod:`.dot`, the entry point)."""

__all__: list[str] = []
