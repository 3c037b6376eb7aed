"""Moved to :mod:`mamlbook.algorithms.mamlpp_bn` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.mamlpp_bn")  # noqa: E702, I001
