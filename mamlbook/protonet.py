"""Moved to :mod:`mamlbook.algorithms.protonet` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.algorithms.protonet")  # noqa: E702, I001
