"""records -> the trace graph (networkx), the trace format, reading and writing trace folders, the questions every reader asks."""
