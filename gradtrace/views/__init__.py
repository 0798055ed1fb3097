"""Pictures of a trace a person can read: which ops a view shows (:mod:`.steps`),
how modules, parameters and repeated blocks fold (:mod:`.fold`), and the DOT text
(:mod:`.static`). :mod:`gradtrace.dot` is the public entry point."""
