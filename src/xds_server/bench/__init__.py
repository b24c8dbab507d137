"""The benchmark harness behind ``make bench``: ``python -m xds_server.bench [--quick]``.

One module per scenario (push, fanout, config_size, churn); each returns figures under the
key names of the benchmark issue. ``__main__`` prints them as one table and writes them as
JSON (bench/results/latest.json) so runs can be compared. ``--quick`` runs tiny sizes, for
the test suite: it proves every figure is still produced, never how fast.
"""
