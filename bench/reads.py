"""What bench/listing_bench.py and bench/log_bench.py share: a read's median time, and their table."""

from __future__ import annotations

import statistics
import time

from fastapi.testclient import TestClient


def median_get(client: TestClient, path: str, reads: int) -> float:
    """The median seconds of `reads` GETs of `path` (after one warm read), each answered 200."""
    assert client.get(path).status_code == 200, path
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        assert client.get(path).status_code == 200, path
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_ratio_table(table: dict[str, list[float]], columns: list[str]) -> None:
    """One row per read, one column per size, and the largest size's time over the smallest's."""
    print(f"| read | {' | '.join(columns)} | ratio |")
    print(f"| --- | {' | '.join('---' for _ in columns)} | --- |")
    for name, times in table.items():
        print(f"| {name} | {' | '.join(f'{t * 1e3:.1f} ms' for t in times)} | {times[-1] / times[0]:.1f}x |")
