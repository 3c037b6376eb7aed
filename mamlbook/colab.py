"""Moved to :mod:`mamlbook.book.colab` (an alias for one release)."""
from mamlbook._moved import alias; alias(__name__, "mamlbook.book.colab")  # noqa: E702, I001
