"""graph -> findings, figures and diffs: summary, causes, checks, diff."""
