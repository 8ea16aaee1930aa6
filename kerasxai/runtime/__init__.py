"""The ground floor: facts about the process kerasxai runs in and how it writes files.

- :mod:`~kerasxai.runtime.choices`: the str enums of choice keys (:class:`Switch`: auto / on /
  off) and the one check that parses a value;
- :mod:`~kerasxai.runtime.backend`: the CPU core count, whether JAX runs on the CPU, and the
  auto / on / off switches that depend on it;
- :mod:`~kerasxai.runtime.files`: atomic file writes (a temporary file in the same folder,
  then ``os.replace``) with the umask's permissions;
- :mod:`~kerasxai.runtime.process`: whether another process (a lock's or a temporary
  folder's owner) still exists;
- :mod:`~kerasxai.runtime.malloc`: the process-wide glibc malloc tuning that command-line
  entry points apply (``import kerasxai`` leaves the process as it is).

Nothing here imports the rest of kerasxai, and importing it imports no framework.
"""

from kerasxai.runtime.backend import MODES, cores, jax_on_cpu, switch_on
from kerasxai.runtime.choices import Choice, Switch
from kerasxai.runtime.files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    default_mode,
    temp_path,
)
from kerasxai.runtime.malloc import keep_large_blocks
from kerasxai.runtime.process import pid_alive

__all__ = [
    "MODES", "Choice", "Switch", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "cores", "current_umask", "default_mode", "jax_on_cpu", "keep_large_blocks", "pid_alive", "switch_on", "temp_path",
]
