"""torch -> compact records: the TorchFunctionMode and what it registers. Imports nothing of gradtrace above it."""
