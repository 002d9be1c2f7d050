"""The Ordergraph benchmark harness: ``python -m bench`` (``make bench``).

Real server processes (``python -m app serve``) on a fresh database, driven from a
separate load process (``python -m bench.load``) over loopback; results are printed as a
table and written to ``bench/results.json``. See ``bench/README.md``.
"""
