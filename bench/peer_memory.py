"""The peak resident memory of this process, for the Python peers of `bun run bench`.

getrusage's ru_maxrss is not it on Linux: a process that a larger one starts (the benchmark's
Bun process) reports that one's resident size until it outgrows it, since the kernel carries the
high-water mark across the fork and the exec. /proc/self/status's VmHWM is the mark of this
process's own memory.
"""

import resource
import sys


def peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # No /proc (macOS): ru_maxrss, in bytes there.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
