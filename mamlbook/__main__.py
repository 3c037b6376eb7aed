"""``python -m mamlbook``: see :mod:`mamlbook.cli`.

Chapters 2, 6–8 run their long jobs through it.
"""
import sys

from .cli import main

sys.exit(main())
