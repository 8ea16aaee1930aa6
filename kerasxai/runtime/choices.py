"""Choice keys: a str enum per key's set of values, and the one check that parses a value.

A member is its string (``==``, hashing, ``str``, f-strings, JSON, the YAML a run stores), so
YAML files, ``key=value`` overrides and code comparing with plain strings keep working.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """Base of the choice enums; each member's name is its value, and it prints (``repr``
    too, as in error messages) as that string."""

    __repr__ = str.__repr__
    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__

    @classmethod
    def spelled(cls) -> str:
        """The values as a sentence: ``"a, b or c"``."""
        values = [m.value for m in cls]
        return ", ".join(values[:-1]) + " or " + values[-1] if len(values) > 1 else values[0]

    @classmethod
    def parse(cls, value, key: str):
        """`value` as a member; ValueError naming `key` and the allowed values otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"key '{key}': must be {cls.spelled()}, got '{value}'") from None


class Switch(Choice):
    """An auto / on / off switch (``auto``: decided by the backend, see runtime.backend).

    YAML reads a bare ``on`` / ``off`` as a boolean (and OmegaConf's ``str`` keys then hold
    ``"True"`` / ``"False"``), so those spellings mean on and off too."""

    auto = "auto"
    on = "on"
    off = "off"

    @classmethod
    def _missing_(cls, value):
        spelled = str(value).lower()
        return {"true": cls.on, "false": cls.off}.get(spelled)
