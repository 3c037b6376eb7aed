"""Moved to :mod:`mamlbook.measure.precision` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.precision")  # noqa: E702, I001
