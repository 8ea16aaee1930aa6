"""``python -m kerasxai.demo``, the same as ``kerasxai demo``: the command is :mod:`kerasxai.cli.demo`."""

from kerasxai.cli.demo import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
