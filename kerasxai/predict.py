"""``python -m kerasxai.predict``, the same as ``kerasxai predict``: the command is :mod:`kerasxai.cli.predict`."""

from kerasxai.cli.predict import main

if __name__ == "__main__":
    import sys

    from kerasxai.cli import run

    sys.exit(run(main))
