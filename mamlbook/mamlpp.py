"""Moved to :mod:`mamlbook.algorithms.mamlpp` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.mamlpp")  # noqa: E702, I001
