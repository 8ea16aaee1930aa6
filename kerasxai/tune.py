"""``python -m kerasxai.tune``, the same as ``kerasxai tune``: the command is :mod:`kerasxai.cli.tune`."""

from kerasxai.cli.tune import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
