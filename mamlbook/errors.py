"""The one exception family for bad user input: a missing or unreadable file, a refused option.

Every chapter's package code raises it for bad input.

Raise a subclass of :class:`MamlbookError` with a message that says what is wrong and what to do.
The command line (``python -m mamlbook``) prints such a message as one line on stderr and exits
with code 2; a traceback means a bug in mamlbook, never a bad file or flag.
"""
from __future__ import annotations

__all__ = ["MamlbookError", "BadFileError", "OptionError"]


class MamlbookError(Exception):
    """Bad user input, explained in the message; the CLI turns it into one line and exit code 2."""


class BadFileError(MamlbookError, ValueError):
    """A file that exists but cannot be used: empty, truncated, an HTML page, the wrong format."""


class OptionError(MamlbookError, ValueError):
    """An option that this learner, preset or machine cannot honour (e.g. ``--device cuda`` without CUDA)."""
