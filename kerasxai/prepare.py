"""``python -m kerasxai.prepare``, the same as ``kerasxai prepare``: the command is :mod:`kerasxai.cli.prepare`."""

from kerasxai.cli.prepare import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
