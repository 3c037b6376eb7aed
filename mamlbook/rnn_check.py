"""Moved to :mod:`mamlbook.measure.lstm_kernels` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.lstm_kernels")  # noqa: E702, I001
