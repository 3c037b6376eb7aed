"""``python -m mamlbook``: see :mod:`mamlbook.cli`."""
import sys

from .cli import main

sys.exit(main())
