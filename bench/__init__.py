"""cellbox's benchmark suite: every scenario measured for cellbox and for Jupyter in one run.

Not part of the package or of the test run. ``python -m bench`` runs the full suite and writes
``bench/results/latest.md`` and ``latest.json``; ``python -m bench.gate`` is the CI perf gate
(same-run ratios only, no Jupyter needed). See ``bench/README.md``.
"""
