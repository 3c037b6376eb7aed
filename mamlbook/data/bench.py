"""Moved to :mod:`mamlbook.measure.episode_sampling` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.measure.episode_sampling")  # noqa: E702, I001
