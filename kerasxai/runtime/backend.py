"""Backend facts: CPU cores, JAX on the CPU, and the auto / on / off switches built on them."""

from __future__ import annotations

import os

from kerasxai.runtime.choices import Switch

# The values of a switch such as model.fast_depthwise or model.host_parallel.
MODES = tuple(m.value for m in Switch)


def cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def jax_on_cpu() -> bool:
    """True for the Keras JAX backend running on the CPU: where the CPU workarounds
    (fast depthwise convolution, host-parallel inference) apply."""
    import keras

    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def switch_on(mode: str, key: str) -> bool:
    """Whether the switch `key` set to `mode` ("auto" | "on" | "off") is on here; "auto" is on
    for JAX on the CPU. Raises ValueError naming `key` for any other value."""
    mode = Switch.parse(mode, key)
    return mode is Switch.on or (mode is Switch.auto and jax_on_cpu())
