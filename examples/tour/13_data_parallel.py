"""Data parallel: one model per device, each on its share of the batch (course notes 3).

Look at: the verdict `agrees`, the two all-reduce calls per rank over one bucket, and
"8 of 8 agree": the all-reduced gradients of two ranks equal the one-device gradients of
the full batch (run it with `--reduction sum` to see them stop agreeing by a factor of 2).

The lesson's program is examples/data_parallel.py (this file only points the tour at it).
Snippet: examples/data_parallel.py:60-82
Tour: gradtrace replay --on cpu --on ddp:2 -o gradtrace-out/tour/13_data_parallel examples/data_parallel.py
Picture: gradtrace-out/tour/13_data_parallel/ddp:2 --rank 0
"""
