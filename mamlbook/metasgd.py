"""Moved to :mod:`mamlbook.algorithms.metasgd` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.metasgd")  # noqa: E702, I001
