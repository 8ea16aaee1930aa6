"""``python -m kerasxai.export``, the same as ``kerasxai export``: the command is :mod:`kerasxai.cli.export`."""

from kerasxai.cli.export import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
