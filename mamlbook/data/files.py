"""What is wrong with a data file, said in one line: empty, an HTML page, truncated, the wrong format.

Chapter 5's loaders use it.

Every loader in :mod:`mamlbook.data` turns a file it cannot use into a :class:`~mamlbook.errors.BadFileError`
whose message is ONE line (see :mod:`mamlbook.errors`): the file, what is wrong with it, and what to do,
e.g. "data/omniglot/images_background_small1.zip is truncated (41,230 bytes; the download or copy stopped
early); delete it and download again with mamlbook.data.download_omniglot_small('data')". Loaders only
read: a file they cannot use is left exactly as it was, and caches are written (:func:`write_cache`) to a
temporary file that is renamed into place only once it is complete (:func:`mamlbook.runs.atomic_file`).
"""
from __future__ import annotations

import os
import struct
import warnings
import zipfile
import zlib
from typing import Sequence

import numpy as np

from ..errors import BadFileError, MamlbookError
from ..runs import atomic_file
from .download import looks_like_html

__all__ = ["DatasetNotFoundError", "KINDS", "IMAGE_ERRORS", "NPZ_ERRORS", "one_line", "describe",
           "bad_file", "bad_bytes", "read_cache", "write_cache"]

ZIP_MAGIC = b"PK\x03\x04"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
KINDS = {  # kind → (what it should be, in words; the first bytes such a file starts with, if fixed)
    "zip": ("a zip file", (ZIP_MAGIC,)),
    "png": ("a PNG image", (PNG_MAGIC,)),
    "image": ("a JPEG or PNG image", (JPEG_MAGIC, PNG_MAGIC)),
    "pickle": ("a pickle", ()),
    "csv": ("a CSV text file", ()),
    "npz": ("a NumPy .npz file", (ZIP_MAGIC,)),
}
_TRUNCATION_WORDS = ("truncated", "ran out of input", "unexpected end", "end of file")
# What Pillow raises on an empty, truncated or foreign image file; what a damaged .npz cache raises.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error)
NPZ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class DatasetNotFoundError(MamlbookError, FileNotFoundError):
    """The dataset is not where it was looked for; the message says where to get it."""


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` as one line: its lines joined with "; " (an error message may span several).

    ``limit``: cut to this many characters, ending in "…" (for another library's long messages).
    """
    line = "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if limit is None or len(line) <= limit else line[:limit - 1] + "…"


def describe(head: bytes, size: int, kind: str, error: BaseException | None = None) -> str:
    """What is wrong with a file that should be ``kind`` (a key of :data:`KINDS`), as a phrase.

    ``head`` is its first bytes (64 are plenty), ``size`` its size in bytes; ``error``, the exception the
    reader raised if any, tells a truncated file from a damaged one. Returns e.g. "is empty (0 bytes)",
    "is an HTML page, not a zip file (...)", "is truncated (...)", "is not a PNG image (it begins with
    b'...')" or "is damaged (<the reader's message>)".
    """
    what, magics = KINDS[kind]
    if size == 0:
        return "is empty (0 bytes)"
    if looks_like_html(head):
        return (f"is an HTML page, not {what} (a download, login or quota page was saved in its place; "
                f"it begins {head.lstrip()[:40]!r})")
    if magics and not head.startswith(magics):
        return f"is not {what} (it begins with {head[:16]!r})"
    reason = one_line(error, limit=120) if error is not None else ""
    cut = any(w in reason.lower() for w in _TRUNCATION_WORDS) or isinstance(error, EOFError)
    if magics == (ZIP_MAGIC,) and "not a zip file" in reason.lower():
        cut = True                         # starts like a zip, but the table of contents at its end is gone
    if error is not None and cut:
        return f"is truncated ({size:,} bytes; the download or copy stopped early)"
    if not magics and error is not None:
        return f"is not {what} ({type(error).__name__}: {reason})" if reason else f"is not {what}"
    return f"is damaged ({reason})" if reason else "is damaged"


def bad_file(path: str | os.PathLike, kind: str, fix: str, error: BaseException | None = None,
             problem: str | None = None) -> BadFileError:
    """A :class:`BadFileError` "<path> <what is wrong>; <fix>" for a file on disk (read again for the facts).

    ``kind`` is what it should be (see :func:`describe`), ``fix`` what to do (e.g. "delete it and download
    again with ..."), ``error`` the reader's exception if any; ``problem`` is said instead of what
    :func:`describe` finds (unless the file is empty or HTML).
    """
    try:
        with open(path, "rb") as f:
            head, size = f.read(64), os.fstat(f.fileno()).st_size
    except OSError as err:
        return BadFileError(one_line(f"{path} cannot be read ({err.strerror or err}); {fix}"))
    found = describe(head, size, kind, error)
    if problem is not None and not found.startswith(("is empty", "is an HTML page")):
        found = problem
    return BadFileError(one_line(f"{path} {found}; {fix}"))


def bad_bytes(name: str, data: bytes, kind: str, fix: str,
              error: BaseException | None = None) -> BadFileError:
    """:func:`bad_file` for bytes that are not a file of their own (a zip member): "<name> ...; <fix>"."""
    return BadFileError(one_line(f"{name} {describe(data[:64], len(data), kind, error)}; {fix}"))


def read_cache(path: str | os.PathLike, version: int, keys: Sequence[str], **expected: str):
    """``({key: array}, None)`` from a cache that :func:`write_cache` wrote with ``version`` (and ``expected``
    values, e.g. ``source_id``); ``(None, None)`` from another; ``(None, error)`` if missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != version or any(str(z[k]) != v for k, v in expected.items()):
                return None, None
            return {k: z[k] for k in keys}, None
    except NPZ_ERRORS as err:
        return None, err


def write_cache(path: str | os.PathLike, what: str, **arrays) -> None:
    """Write a decoded cache atomically (temp file + rename); warn and go on if the folder is read-only."""
    try:
        with atomic_file(path, suffix=".npz.tmp") as f:
            np.savez(f, **arrays)
    except OSError as e:
        warnings.warn(f"could not write the {what} cache {path} ({e}); decoding again next time",
                      stacklevel=2)
