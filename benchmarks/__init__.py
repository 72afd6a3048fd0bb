"""objstore's benchmark suite: large-state save/restore measured against the machine's limits.

Run ``python -m benchmarks.run`` (see ``benchmarks/README.md``); every figure of one report
comes from the same run, so ratios compare like with like.
"""
