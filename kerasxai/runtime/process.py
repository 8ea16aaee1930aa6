"""Whether another process still exists: how a lock or a temporary folder tells a live owner
from one that died without cleaning up."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts), without signalling it where /proc exists."""
    if pid == os.getpid():
        return True
    if Path("/proc/self").is_dir():
        return Path(f"/proc/{pid}").exists()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
