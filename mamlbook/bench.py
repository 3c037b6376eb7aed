"""Moved to :mod:`mamlbook.measure.bench` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.bench")  # noqa: E702, I001
