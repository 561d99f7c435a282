"""What one append + fdatasync costs on a disk: into a file grown by ftruncate (a hole), and
into space already written with zeros, for a 150 B and a 9600 B write.

`python3 tools/sync_cost.py [N] [DIR]`: the median and p90 of N, in microseconds
(docs/benchmarks.md, "Segments grown ahead"). DIR should be on the disk you care about.
"""

import os
import statistics
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
DIR = sys.argv[2] if len(sys.argv) > 2 else tempfile.gettempdir()
BLOCK = 4096


def run(size: int, prezero: bool) -> tuple[float, float]:
    fd, path = tempfile.mkstemp(dir=DIR)
    try:
        if prezero:
            total = (N * size + 2 * BLOCK) // BLOCK * BLOCK
            os.pwrite(fd, b"\0" * total, 0)
        else:
            os.ftruncate(fd, BLOCK)
        os.fdatasync(fd)
        buf, off, length, times = b"x" * size, 0, BLOCK, []
        for _ in range(N):
            t = time.perf_counter_ns()
            if not prezero:
                need = (off + size + 8 + BLOCK - 1) // BLOCK * BLOCK
                if need > length:
                    os.ftruncate(fd, need)
                    length = need
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            times.append((time.perf_counter_ns() - t) / 1000)
            off += size
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.9)]
    finally:
        os.close(fd)
        os.unlink(path)


print("| write | how the file grows | median (µs) | p90 (µs) |")
print("|---|---|---:|---:|")
for size in (150, 9600):
    for prezero in (False, True):
        median, p90 = run(size, prezero)
        how = "into written zeros" if prezero else "grown by ftruncate (a hole)"
        print(f"| {size} B | {how} | {median:.0f} | {p90:.0f} |")
