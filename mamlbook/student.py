"""Moved to :mod:`mamlbook.book.student` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.book.student")  # noqa: E702, I001
