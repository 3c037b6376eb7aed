"""Moved to :mod:`mamlbook.runs` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.runs")  # noqa: E702, I001
