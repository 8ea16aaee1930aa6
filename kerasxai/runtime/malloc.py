"""Keep large freed host buffers mapped between executions (glibc malloc tuning).

XLA's CPU runtime allocates an execution's large buffers with malloc and frees them after it.
glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
returns it to the OS on free, so each execution page-faults all of its large buffers again
(BENCHMARKS.md, "Inference: models and backends", has the cost on a 2-core machine). With mmap off
(``M_MMAP_MAX = 0``) glibc takes such blocks from the heap, and ``M_TRIM_THRESHOLD = -1``
keeps freed heap memory for the next execution instead of returning it: the process stays at
its peak memory.

Blocks allocated on other threads (XLA's workers: YNNPACK's scratch buffers in a train step) come
from per-thread arenas, whose heaps are at most 64 MiB: glibc serves a larger block there with
an mmap whatever ``M_MMAP_MAX`` says. ``M_ARENA_MAX = 1`` makes every thread allocate from the
main heap, where the two settings above hold.

Process-wide (it concerns every allocation after it, also NumPy's) and Linux/glibc only, so
the programs apply it, not the library: the ``kerasxai`` commands and the tools under tools/
call :func:`keep_large_blocks` when they start (``kerasxai.cli.run``); a Python program that
wants it calls it itself. Set ``KERASXAI_MALLOC=system`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER_TRIM = -1  # M_TRIM_THRESHOLD -1: freed heap memory is kept for reuse, never returned
ENV = "KERASXAI_MALLOC"
TUNED = False  # whether keep_large_blocks applied the tuning in this process


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_large_blocks() -> bool:
    """Turn glibc's mmap for large blocks off and keep freed memory; True if it was applied."""
    if os.environ.get(ENV, "").strip().lower() == "system":
        return False
    libc = _libc()
    if libc is None:
        return False
    global TUNED
    TUNED = all(libc.mallopt(option, value) for option, value in
                ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM)))
    return TUNED

