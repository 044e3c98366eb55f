"""Benchmarks that read as ratios to the physical limit: ``python -m benchmarks``.

Each row of the table stands beside the raw primitive that bounds it, measured in the same run on
the same machine (these machines are noisy; only ratios measured together compare). Nothing here
is a unit test, and no unit test measures time.
"""
