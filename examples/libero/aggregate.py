"""The per-suite LIBERO table with 95% Wilson intervals, next to the paper's numbers.
See `benchmarks.libero_aggregate`.

    python examples/libero/aggregate.py outputs/libero_protocol [--json summary.json]
"""

from benchmarks.libero_aggregate import main

if __name__ == "__main__":
    raise SystemExit(main())
