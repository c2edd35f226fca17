"""Benchmarks: scripts run as ``python -m benchmarks.<name>`` from the repository root.

Each writes ``benchmarks/results/<name>.json`` and ``.md`` through ``benchmarks.common.write_results``,
stamped with the date, the machine, package versions and the git commit. They read the corpora in
``../shared`` in place and are never run in CI.
"""
