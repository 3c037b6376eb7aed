"""Old module paths that moved in 0.2: each is a two-line alias that warns, kept for one release.

Old notebooks (chapters 3, 4, 8, 9) and Colab copies keep importing through them.
"""
from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["alias"]


def alias(old: str, new: str) -> None:
    """Make module ``old`` the module ``new`` (same object, private names too), with a DeprecationWarning.

    Run as a script (``python -m old``), it runs ``new``'s ``main()`` instead.
    """
    module = importlib.import_module(new)
    if old == "__main__":
        sys.exit(module.main())
    warnings.warn(f"{old} moved to {new}; import it from there (the old path goes in the next release)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = module
