"""Load pickles that may only contain NumPy arrays and plain Python containers.

Chapter 5's mini-ImageNet pickles.

``pickle.load`` runs whatever callable the file names (a pickle can call ``os.system``), and a
learn2learn file from a mirror can be anything. :func:`safe_load` resolves only :data:`ALLOWED_GLOBALS`
(dicts, lists, tuples, strings and numbers need none) and refuses any other global *before* it is
looked up, so nothing from the file is ever called.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from ..errors import BadFileError
from .files import bad_bytes, bad_file

__all__ = ["UnsafePickleError", "BadPickleError", "ALLOWED_GLOBALS", "safe_loads", "safe_load"]

# What a damaged or foreign byte stream makes the unpickler raise (anything from it is untrusted data).
_UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
               OverflowError, MemoryError, struct.error)
FIX = "get a complete copy of the file again (see docs/data.md)"
_TRUST = "Use a trusted copy of the file, or convert it to .npz with code you trust."


class BadPickleError(BadFileError, pickle.UnpicklingError):
    """A file that is not a readable pickle: empty, truncated, an HTML page, other bytes."""


class UnsafePickleError(BadPickleError):
    """A pickle named a global outside the allow-list; nothing from it was executed."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The real NumPy callables, found from NumPy's own ``__reduce__`` (works on NumPy 1 and 2)."""
    reconstruct = np.array(0).__reduce__()[0]          # multiarray._reconstruct
    scalar = np.int64(0).__reduce__()[0]               # multiarray.scalar
    frombuffer = np.arange(2).__reduce_ex__(5)[0]      # numeric._frombuffer (protocol 5)
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):         # NumPy 1 writes numpy.core, NumPy 2 numpy._core
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


def _codecs_encode(obj, encoding="utf-8"):
    """``_codecs.encode`` for str → bytes only (how protocol ≤ 2 pickles store bytes)."""
    if not isinstance(obj, str):
        raise UnsafePickleError("the pickle calls _codecs.encode on a non-string, which is refused; nothing "
                                "from the file was executed. Use a trusted copy of the file.")
    return obj.encode(encoding)


ALLOWED_GLOBALS = {**_numpy_globals(), ("_codecs", "encode"): _codecs_encode}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")      # latin1: NumPy arrays pickled by Python 2
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{self.source} asks to call or build {module}.{name}, which is not a "
                                    "NumPy array or a plain container. It was refused and nothing from the "
                                    f"file was executed. {_TRUST}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source} uses persistent ids, which are refused; nothing from the "
                                f"file was executed. {_TRUST}")


def _load(file, source: str, describe):
    """Unpickle ``file``; a damaged stream raises ``describe(err)``, a refused global its own error."""
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError as err:
        if str(err).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: {err}") from err
    except _UNREADABLE as err:
        raise BadPickleError(str(describe(err))) from err


def safe_loads(data: bytes, source: str = "the pickle", *, fix: str = FIX):
    """:func:`safe_load` for bytes in memory (``source`` names them in messages)."""
    return _load(io.BytesIO(data), source, lambda err: bad_bytes(source, data, "pickle", fix, err))


def safe_load(path: str | Path, *, fix: str = FIX):
    """Unpickle the file at ``path`` with the allow-list (see the module docstring).

    Raises:
        UnsafePickleError: it names a global outside the allow-list (nothing was run).
        BadPickleError: it is empty, truncated, an HTML page or not a pickle; the one-line message
            says which, and ``fix`` (what to do).
        FileNotFoundError: there is no file at ``path``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _load(f, str(path), lambda err: bad_file(path, "pickle", fix, err))
