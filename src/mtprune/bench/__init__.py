"""Speed and cost measurement: interleaved rounds, their statistics and per-model costs in own processes.

``config`` (BenchConfig), ``engine`` (run_bench: the timed rounds), ``stats`` (schedule, intervals, flags),
``costs`` (each model alone: the parent) and ``alone`` (what the child process measures), ``render``
(tables, Markdown, plot).
"""
