"""`make bench`: every benchmark prints its figure and the ratio against its floor."""

from __future__ import annotations

import sys

from tests.benchmarks import bench_audit, bench_drops, bench_ml, bench_pipeline


def main() -> int:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for line in bench_pipeline.main(scale):
        print(line, flush=True)
    for line in bench_drops.main():
        print(line, flush=True)
    for line in bench_audit.main():
        print(line, flush=True)
    for line in bench_ml.main(scale):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
