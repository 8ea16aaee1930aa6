"""``python -m kerasxai.train``, the same as ``kerasxai train``: the command is :mod:`kerasxai.cli.train`."""

from kerasxai.cli.train import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
