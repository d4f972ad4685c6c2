"""Wall time and memory of the phases of a long run.

Peak memory is measured as anonymous resident memory (``RssAnon`` in
``/proc``): pages of files mapped from disk (a memory-mapped or zarr ``X``
in the page cache) count in the resident size but are not the process's
own, so ``RssAnon`` is the figure that says whether a run fits in RAM. It is
sampled every few milliseconds in a thread, summed over the process and its
children (joblib and dask workers started by it).
"""

import os
import threading
import time
from contextlib import contextmanager

__all__ = ["PhaseMeter", "rss_anon"]


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(c) for c in handle.read().split()]
    except OSError:
        return []


def _anon_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_anon(pid=None, children=True):
    """Anonymous resident memory in bytes of a process (this one by
    default), with its descendants' unless ``children=False``."""
    pid = os.getpid() if pid is None else pid
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _anon_kib(current)
        if children:
            stack.extend(_children(current))
    return total * 1024


class PhaseMeter:
    """Times phases and records the peak anonymous memory of each.

    Examples
    --------
    >>> meter = PhaseMeter(log=None)
    >>> with meter("sleep"):
    ...     _ = bytearray(10**6)
    >>> meter.rows[0]["phase"]
    'sleep'
    """

    def __init__(self, interval=0.01, log=print):
        self.interval = interval
        self.log = log
        self.rows = []

    @contextmanager
    def __call__(self, name):
        peak, running = [rss_anon()], [True]

        def watch():
            while running[0]:
                peak[0] = max(peak[0], rss_anon())
                time.sleep(self.interval)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        start = time.perf_counter()
        try:
            yield self
        finally:
            seconds = time.perf_counter() - start
            running[0] = False
            thread.join()
            peak[0] = max(peak[0], rss_anon())
            row = {"phase": name, "seconds": seconds, "peak_anon_gib": peak[0] / 2**30}
            self.rows.append(row)
            if self.log is not None:
                self.log(
                    f"{name}: {seconds:.1f} s, peak anonymous memory "
                    f"{row['peak_anon_gib']:.2f} GiB"
                )

    def table(self):
        """The phases as a printable table (str)."""
        lines = [f"{'phase':>34} {'time (s)':>10} {'peak RssAnon (GiB)':>19}"]
        for row in self.rows:
            lines.append(
                f"{row['phase']:>34} {row['seconds']:>10.1f} "
                f"{row['peak_anon_gib']:>19.2f}"
            )
        return "\n".join(lines)
