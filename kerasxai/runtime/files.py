"""Atomic file writes: a temporary file in the same folder, moved into place with ``os.replace``.

A reader (or a run resumed after a crash) sees the previous complete file or the new one,
never half of one. Files get the permissions ``open`` would give under the umask, not
``mkstemp``'s 0600, so another user (e.g. a serving container) can read them. An interrupted
write leaves at most a hidden ``.<name>.<random><suffix>`` beside the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask sets it
    while it reads it, which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permissions ``open`` / ``mkdir`` would give under the umask (mkstemp and mkdtemp
    give 0600 / 0700, which another user, e.g. a serving container, cannot read)."""
    return (0o777 if directory else 0o666) & ~current_umask()


def temp_path(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty file ``.<name>.<random><suffix>`` beside `path` (its folder is created if
    missing) with the umask's permissions; the caller renames it onto `path` or removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, default_mode())
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary path beside `path` to write to; it replaces `path` when the block
    ends, and is removed when the block raises. `suffix` is for writers that pick the format
    by extension (``.keras``, ``.png``)."""
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (synced to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: dict) -> None:
    """`data` as indented JSON; values JSON cannot hold become floats (NumPy numbers) or strings."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)
