"""Shared benchmark plumbing: wall time, rows/s and peak memory of python + JVM.

Peak memory is the highest sum of resident set sizes over this Python process and all
its children (the Spark driver JVM is a child of the Python process that started it),
sampled every 100 ms by a background thread: a benchmark figure, not an exact count.
`PeakMemory(children=False)` samples one process only (an in-process peer such as
scikit-learn or LightGBM, without the idle JVM beside it).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import psutil


def tree_rss_bytes(pid: int | None = None, children: bool = True) -> int:
    """RSS of a process and (unless `children` is False) all its descendants, in bytes."""
    try:
        proc = psutil.Process(pid or os.getpid())
        procs = [proc, *(proc.children(recursive=True) if children else [])]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class PeakMemory:
    """Samples the process-tree RSS in a daemon thread; `peak` is the maximum seen.

    With `children` False only this Python process is sampled.
    """

    def __init__(self, interval: float = 0.1, children: bool = True):
        self.interval = interval
        self.children = children
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(children=self.children))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.peak = tree_rss_bytes(children=self.children)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_bytes(children=self.children))


@dataclass
class Measurement:
    name: str
    subscribers: int
    seconds: float
    rows: int
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


@contextmanager
def measure(name: str, subscribers: int, rows: int = 0, results: list | None = None, **extra):
    """Time a block and record wall time, rows/s and peak memory into `results`."""
    holder: dict = {"rows": rows}
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        yield holder
        seconds = time.perf_counter() - t0
    record(
        Measurement(name, subscribers, seconds, int(holder.get("rows", rows)), mem.peak / 2**20, extra),
        results,
    )


def record(m: Measurement, results: list | None = None) -> Measurement:
    """Print one measurement line and append `m` to `results`."""
    print(
        f"  {m.name:<28} n={m.subscribers:>9,}  {m.seconds:8.1f}s  {m.rows_per_second:>12,.0f} rows/s  "
        f"peak {m.peak_rss_mb:,.0f} MB",
        flush=True,
    )
    if results is not None:
        results.append(m)
    return m


def scaling_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) on log(subscribers): 1.0 is linear growth."""
    pts = [(math.log(n), math.log(t)) for n, t in points if n > 0 and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def write_results(out_dir: Path, stem: str, payload: dict, markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str))
    (out_dir / f"{stem}.md").write_text(markdown)
    print(f"wrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.md')}")
