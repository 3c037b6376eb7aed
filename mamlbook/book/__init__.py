"""The book's own tools: student versions of every chapter, Colab and Binder helpers."""

__all__ = ["student", "colab"]
