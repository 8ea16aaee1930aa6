"""``kerasxai COMMAND [args ...]``: one console script for all commands.

The command-line layer of kerasxai: one module per command (``kerasxai.cli.train``, ...) holds
its argument parsing, its printing and ``main(argv) -> int``; the library does the work, and
:mod:`kerasxai.cli.errors` turns its exceptions into one stderr line and an exit code.

``kerasxai train --config X.yaml`` runs exactly ``python -m kerasxai.train --config X.yaml``
(``kerasxai/train.py`` only starts :mod:`kerasxai.cli.train`): the rest of the command line
goes to that module's ``main(argv)`` and its exit status comes back unchanged. Command modules
are imported only when needed, and they import TensorFlow / JAX only inside ``main``, so
``kerasxai --help`` imports no framework.

:func:`run` is how a program starts a command (this script, ``python -m kerasxai.<command>``,
the tools under tools/): it applies the process-wide malloc tuning of
:mod:`kerasxai.runtime.malloc` first, which ``import kerasxai`` leaves to the program.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import kerasxai
from kerasxai.runtime import keep_large_blocks

# Command name -> module kerasxai.cli.<name>, which has ``main(argv) -> int`` and ``DESCRIPTION``.
COMMANDS = ("prepare", "train", "tune", "evaluate", "predict", "export", "demo")


def _help() -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {importlib.import_module(f'kerasxai.cli.{name}').DESCRIPTION}" for name in COMMANDS]
    return "\n".join([
        "usage: kerasxai [-h] [--version] COMMAND [args ...]",
        "",
        kerasxai.__doc__.splitlines()[0],
        "",
        "commands:",
        *rows,
        "",
        "`kerasxai COMMAND --help` shows a command's options; `kerasxai COMMAND ...` is the same as",
        "`python -m kerasxai.COMMAND ...`.",
    ])


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)`` as this process's entry point: malloc tuned first, exit status returned."""
    keep_large_blocks()
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(_help(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        print(_help())
        return 0
    if command == "--version":
        print(f"kerasxai {kerasxai.__version__}")
        return 0
    if command not in COMMANDS:
        print(f"kerasxai: error: unknown command {command!r}; choose from {', '.join(COMMANDS)} "
              "(kerasxai --help)", file=sys.stderr)
        return 2
    return run(importlib.import_module(f"kerasxai.cli.{command}").main, rest)

