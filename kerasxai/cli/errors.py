"""How a command's failure reaches the terminal: one stderr line and an exit code.

Every command runs its work through :func:`guard`. Bad input (an error type of
:data:`BAD_INPUT`: a bad config key, a missing file, a run folder in use, ...) prints
``<prefix>: <message>`` and gives exit code 2; Ctrl-C (``KeyboardInterrupt``, which training's
``TrainingInterrupted`` is) prints the command's hint on what was kept and gives 130. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BAD_INPUT_EXIT = 2
INTERRUPTED_EXIT = 130


class UsageError(ValueError):
    """Command-line arguments that do not fit together (beyond what argparse checks)."""


# Bad input: (module, class). Looked up among the modules already imported, so that a failing
# command imports nothing more (numpy, OpenCV, omegaconf) to classify its error: an instance of
# a class means its module was imported.
BAD_INPUT = (
    ("kerasxai.cli.errors", "UsageError"),
    ("kerasxai.config", "ConfigError"),
    ("kerasxai.data.sources", "DataError"),
    ("kerasxai.runs", "RunError"),
    ("kerasxai.models.weights", "WeightsError"),
    ("kerasxai.pretrained", "PretrainedError"),
    ("kerasxai.localize", "LocalizeError"),
    ("kerasxai.serving", "ExportError"),
    ("kerasxai.prediction", "OutputError"),
)


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (exit 2) rather than a bug."""
    types = tuple(getattr(sys.modules[m], name) for m, name in BAD_INPUT if m in sys.modules)
    return isinstance(exc, types)


def guard(work: Callable[[], int], *, prefix: str = "error",
          interrupted: str | Callable[[KeyboardInterrupt], str] = "interrupted") -> int:
    """``work()``'s exit code, or 2 / 130 with one stderr line when it fails on bad input / Ctrl-C.

    ``prefix`` starts the bad-input line; ``interrupted`` is the Ctrl-C line (or makes it from
    the exception), which should say what was kept and how to go on."""
    try:
        return work()
    except KeyboardInterrupt as exc:
        print(f"\n{interrupted(exc) if callable(interrupted) else interrupted}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:
        if not is_bad_input(exc):
            raise
        print(f"{prefix}: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
