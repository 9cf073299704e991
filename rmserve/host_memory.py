"""Host memory: keep what a CPU forward frees for the next forward instead of page-faulting it back in.

A forward call allocates and frees tens of MB of activations. With glibc's defaults much of that goes back
to the kernel after every call: big blocks are mmap'd and unmapped, the heap top is trimmed, and a
thread's arena drops whole heaps. The next call then touches fresh pages, and the kernel zeroes every one
of them. Measured on the bench's text model (a 2-core Xeon): 250-4,300 minor page faults per response on
each of the forward's two threads in ``rmserve serve``, varying from one start to the next (glibc adapts its
thresholds to the allocation history); ``python -m bench.forward_busy --workloads text
--server-arg=--no-retain-host-memory`` prints them. Run from a thread other than the main one, as the
server's worker is, the in-process ceiling did 22.3 responses/s with ~11,000 faults per response and
29.3 with none once these settings were on (bench/README.md, "Page faults").

``retain_freed_memory`` sets three ``mallopt`` parameters at run time (the documented ``MALLOC_*_``
environment variables only act at process start):

- ``M_MMAP_THRESHOLD`` 32 MiB, glibc's maximum: blocks below it come from the arenas, not mmap/munmap.
  Setting it also switches off glibc's dynamic threshold.
- ``M_TRIM_THRESHOLD`` 1 GiB: freed memory stays in the process up to that much per arena.
- ``M_TOP_PAD`` 64 MiB: an arena grows in steps that a forward's next allocations fit in.

The cost is resident memory. The process keeps its peak working set, bounded by what one batch needs
(``--max-batch-tokens``), plus up to 1 GiB of freed memory per arena. A parameter whose ``MALLOC_*_``
variable the user has set is left alone. Not glibc (musl, macOS): nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("rmserve.host_memory")

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
# name: (mallopt parameter, value, the environment variable that sets it at process start)
SETTINGS = {
    "mmap_threshold": (M_MMAP_THRESHOLD, 32 << 20, "MALLOC_MMAP_THRESHOLD_"),
    "trim_threshold": (M_TRIM_THRESHOLD, 1 << 30, "MALLOC_TRIM_THRESHOLD_"),
    "top_pad": (M_TOP_PAD, 64 << 20, "MALLOC_TOP_PAD_"),
}


def retain_freed_memory(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Apply ``SETTINGS`` through glibc's ``mallopt``; returns what was applied ({} when not glibc)."""
    environ = os.environ if environ is None else environ
    if platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = {}
    for name, (param, value, variable) in SETTINGS.items():
        if variable in environ:  # the user's own setting, applied by glibc at start
            continue
        if mallopt(param, value) == 1:
            applied[name] = value
        else:
            log.warning("mallopt(%s=%d) was refused; freed memory may go back to the kernel", name, value)
    return applied


__all__ = ["SETTINGS", "retain_freed_memory"]
