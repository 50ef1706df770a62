"""Wall time and peak memory of a block of work, counting the whole process tree (dbt runs as a
subprocess, so the parent's own RSS would understate the platform's footprint)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    parts: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return self.peak_rss_bytes / 2**30


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@contextmanager
def measured(interval: float = 0.05) -> Iterator[Measurement]:
    """Sample the RSS of this process and its children every `interval` seconds while the block runs."""
    result = Measurement()
    me = psutil.Process()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result.peak_rss_bytes = max(result.peak_rss_bytes, tree_rss(me))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    began = time.perf_counter()
    sampler.start()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - began
        stop.set()
        sampler.join()


def report(name: str, platform: Measurement, floor: Measurement, floor_label: str) -> str:
    ratio = platform.seconds / floor.seconds if floor.seconds else float("inf")
    return (
        f"{name}: platform {platform.seconds:.1f} s (peak {platform.peak_gib:.2f} GiB) | "
        f"floor [{floor_label}] {floor.seconds:.1f} s (peak {floor.peak_gib:.2f} GiB) | ratio {ratio:.2f}x"
    )
