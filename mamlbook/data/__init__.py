"""Few-shot image data: N-way K-shot episodes, Omniglot, mini-ImageNet, checked downloads.

The tested copy of chapter 5 (episodes), used by chapters 6–8.

The pieces, one module each:
- :mod:`.episodes`: :class:`ClassImages` (a split as one uint8 tensor per class) and
  :class:`EpisodeSampler` (whole meta-batches gathered on the split's device);
- :mod:`.omniglot`: the official zips → 28×28 classes, rotations, split presets;
- :mod:`.miniimagenet`: pickles, ``images/`` + CSVs, class folders → an 84×84 uint8 cache;
- :mod:`.download`: temp file, resume, checksum, HTML detection, atomic rename;
- :mod:`.safe_pickle`: an allow-list unpickler;
- :mod:`.files`: one-line messages for bad files (empty, truncated, HTML, wrong format), atomic writes;
- :mod:`.fake`: generated stand-ins in the real formats (tests and fast mode only);
- :mod:`.paths`: where data is looked for and written;
- :mod:`.bench`: ``python -m mamlbook.data.bench`` times episode sampling.
"""
from .download import (
                       ChecksumError,
                       DownloadError,
                       HTMLInsteadOfDataError,
                       TruncatedDownloadError,
                       download,
                       file_hash,
                       verify_file,
)
from .episodes import ClassImages, Episodes, EpisodeSampler, base_class, check_disjoint
from .fake import make_fake_miniimagenet, make_fake_omniglot
from .files import DatasetNotFoundError
from .miniimagenet import load_miniimagenet, read_split_csv, verify_miniimagenet
from .omniglot import (
                       download_omniglot_full,
                       download_omniglot_small,
                       find_omniglot_small,
                       maml_split,
                       omniglot_splits,
                       read_omniglot,
                       vinyals_split,
)
from .paths import data_roots, default_cache_dir, default_data_root, find_data
from .safe_pickle import BadPickleError, UnsafePickleError, safe_load

__all__ = [
    "ChecksumError", "DownloadError", "HTMLInsteadOfDataError", "TruncatedDownloadError", "download",
    "file_hash", "verify_file", "ClassImages", "EpisodeSampler", "Episodes", "base_class",
    "check_disjoint", "make_fake_miniimagenet", "make_fake_omniglot", "DatasetNotFoundError",
    "load_miniimagenet", "read_split_csv", "verify_miniimagenet", "download_omniglot_full",
    "download_omniglot_small", "find_omniglot_small", "maml_split", "omniglot_splits",
    "read_omniglot", "vinyals_split", "data_roots", "default_cache_dir", "default_data_root",
    "find_data", "BadPickleError", "UnsafePickleError", "safe_load",
]
