"""Moved to :mod:`mamlbook.algorithms.anil` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.anil")  # noqa: E702, I001
