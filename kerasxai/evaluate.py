"""``python -m kerasxai.evaluate``, the same as ``kerasxai evaluate``: the command is :mod:`kerasxai.cli.evaluate`."""

from kerasxai.cli.evaluate import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
