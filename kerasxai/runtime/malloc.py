"""Keep large freed host buffers mapped between executions (glibc malloc tuning).

XLA's CPU runtime allocates an execution's large buffers with malloc and frees them after it.
glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
returns it to the OS on free, so each execution page-faults all of its large buffers again
(BENCHMARKS.md, "Inference: models and backends", has the cost on a 2-core machine). With mmap off
(``M_MMAP_MAX = 0``) glibc takes such blocks from the heap, and a high ``M_TRIM_THRESHOLD``
keeps up to that much freed heap memory for the next execution instead of unmapping it.

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
TRIM_THRESHOLD = 1 << 30  # freed heap memory kept for reuse (bytes)
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
    TUNED = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return TUNED
