"""Moved to :mod:`mamlbook.measure.gpu_speed` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.gpu_speed")  # noqa: E702, I001
