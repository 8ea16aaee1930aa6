"""glibc keeps large blocks in the heap once a command starts (kerasxai.runtime.malloc), and
`import kerasxai` alone leaves malloc as it is."""

import ctypes
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning is Linux/glibc only"
)

PROBE = r"""
import ctypes, sys
import numpy as np
import kerasxai
from kerasxai.cli import run
from kerasxai.runtime import malloc

if sys.argv[1] == "command":
    run(lambda argv: 0)  # how every command and tool starts

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
block = np.ones(64 * 2**20 // 4, dtype=np.float32)  # 64 MiB: above glibc's largest mmap threshold
# 96 MiB on another thread: larger than a per-thread arena's heap can hold
import threading
blocks = []
worker = threading.Thread(target=lambda: blocks.append(np.ones(96 * 2**20 // 4, dtype=np.float32)))
worker.start(); worker.join()
print(malloc.TUNED, libc.mallinfo2().hblks - before)
"""


def run_probe(start="command", **env):
    if not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, start], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    tuned, mapped = out.stdout.split()
    return tuned == "True", int(mapped)


def test_large_blocks_come_from_the_heap():
    assert run_probe() == (True, 0)


def test_system_malloc_on_request():
    tuned, mapped = run_probe(KERASXAI_MALLOC="system")
    assert not tuned and mapped >= 2  # both blocks are fresh mmaps


def test_import_leaves_malloc_alone():
    tuned, mapped = run_probe(start="import")
    assert not tuned and mapped >= 1
