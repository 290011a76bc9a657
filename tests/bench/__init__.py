"""Benchmarks: runnable modules (``python -m tests.bench.<name>``), never collected by pytest.

Each one measures against a baseline in the same run and prints the ratio; none asserts a time.
Servers and load generator are separate processes on loopback; figures are medians over rounds.

``python -m tests.bench`` runs them all in turn (``--quick``, ``--only``, ``--skip``, ``--write-docs``; see
``__main__``) and prints one table of every figure. What it asks of a benchmark module is one function:

    def suite(quick: bool) -> list[Row]

which runs the benchmark with its own defaults (``quick``: fewer and shorter rounds, smaller sizes, for a
smoke run of the whole suite in a few minutes), prints as it goes and its own table as when it runs
alone, and returns the table's rows (``_harness.Row``). A row may name its benchmark (``bench``; the
suite fills in the module's name) and should say what it measures (``kind``: ``throughput``, ``latency``,
``cpu``, ``memory`` or ``time``; the suite's chart is drawn from it). The module's ``run(...)`` returns
the same rows, so ``main`` and ``suite`` are thin. A new benchmark is added to ``BENCHMARKS`` in
``__main__``; modules are imported only when their turn comes, and a listed module that is missing
stops the suite before anything runs.
"""
