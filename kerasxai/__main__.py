"""``python -m kerasxai COMMAND ...``: the same as the ``kerasxai`` console script."""

import sys

from kerasxai.cli import main

sys.exit(main())
