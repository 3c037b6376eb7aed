"""Moved to :mod:`mamlbook.algorithms.reptile` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.reptile")  # noqa: E702, I001
