"""Moved to :mod:`mamlbook.measure.amp_accuracy` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.amp_accuracy")  # noqa: E702, I001
