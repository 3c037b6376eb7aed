"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split) from any common distribution.

Chapters 5 and 7.

100 ImageNet classes × 600 images at 84×84, split 64 / 16 / 20 classes (meta-train / val / test), from
the first layout found of (c) learn2learn's pickles (read with :mod:`mamlbook.data.safe_pickle`), (a)
``images/`` + Ravi & Larochelle's CSVs, (b) class folders ``train|val|test/<wnid>/*.jpg``. The first read
writes the cache ``mini-imagenet-<split>.npz``. Files, checksums and what the loader does (LANCZOS
resizing, sort order): docs/data.md, section "mini-ImageNet".
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import BadFileError, OptionError
from .download import file_hash, looks_like_html
from .episodes import ClassImages
from .fake import FAKE_MARKER
from .files import IMAGE_ERRORS, DatasetNotFoundError, bad_file, one_line, read_cache, write_cache
from .paths import default_data_root
from .safe_pickle import safe_load

__all__ = ["SPLITS", "SIZE", "NUM_CLASSES", "IMAGES_PER_CLASS", "PICKLE_NAMES", "CSV_SHA256", "CSV_HEADER",
           "HELP", "DatasetNotFoundError", "detect_format", "read_split_csv", "read_images_csv",
           "read_class_folders", "read_pickle", "load_miniimagenet", "verify_miniimagenet"]

SPLITS = ("train", "val", "test")
SIZE = 84
NUM_CLASSES = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600
PICKLE_NAMES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
                "test": "mini-imagenet-cache-test.pkl"}
CSV_SHA256 = {  # github.com/twitter/meta-learning-lstm, data/miniImagenet/
    "train": "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f",
    "val": "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9",
    "test": "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa",
}
CSV_HEADER = ["filename", "label"]
CACHE_VERSION = 1
HELP = ("mini-ImageNet has no stable public download with a checksum, so get ONE of these and put it in "
        "{root}: (a) images/ + CSVs: the 60,000 84x84 JPEGs (images.zip of Ravi & Larochelle, 2017) unzipped "
        "to {root}/images/n0153282900000005.jpg ..., and train.csv, val.csv, test.csv from "
        "https://github.com/twitter/meta-learning-lstm/tree/master/data/miniImagenet in {root}/; "
        "(b) class folders {root}/train/<wnid>/*.jpg, {root}/val/..., {root}/test/... (the layout "
        "cbfinn/maml's data/miniImagenet/proc_images.py makes from (a)); (c) learn2learn's pickles "
        "{root}/mini-imagenet-cache-train.pkl, ...-validation.pkl, ...-test.pkl. Then run "
        "mamlbook.data.verify_miniimagenet({root!r}) to check them. See docs/data.md.")
CSV_FIX = ("download it again from https://github.com/twitter/meta-learning-lstm/tree/master/data/"
           "miniImagenet and use it unchanged (see docs/data.md)")
IMAGES_FIX = ("replace it with the same file from Ravi & Larochelle's images.zip (or unzip the whole "
              "images.zip again; see docs/data.md)")
FOLDERS_FIX = ("replace it with a good copy (or make the class folders again from images.zip with "
               "cbfinn/maml's proc_images.py; see docs/data.md)")
PICKLE_FIX = "delete it and download learn2learn's mini-ImageNet cache files again (see docs/data.md)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _split_name(split: str) -> str:
    if split not in SPLITS:
        raise OptionError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def detect_format(root: str | Path, split: str) -> str:
    """Which layout holds ``split`` under ``root``: "pickle", "csv" or "folders"."""
    root = Path(root)
    if (root / PICKLE_NAMES[_split_name(split)]).is_file():
        return "pickle"
    if (root / f"{split}.csv").is_file() and (root / "images").is_dir():
        return "csv"
    if (root / split).is_dir() and any(p.is_dir() for p in (root / split).iterdir()):
        return "folders"
    what = "does not exist" if not root.is_dir() else f"holds no {split} split in a known layout"
    raise DatasetNotFoundError(f"mini-ImageNet folder {root} {what}. " + HELP.format(root=str(root)))


def _truncated_row(row: list[str], previous: list[str]) -> bool:
    """True if a last row without a line end cannot be a whole ``<wnid><number>.jpg,<wnid>`` row.

    The published files name each image ``<wnid><8 digits>.jpg`` and every wnid has the same length
    (``n`` + 8 digits), so a cut label is shorter than the label of the row before.
    """
    if len(row) != 2 or not row[0].lower().endswith(IMAGE_SUFFIXES) or not row[1]:
        return True
    return not row[0].startswith(row[1]) or (len(previous) == 2 and len(row[1]) != len(previous[1]))


def read_split_csv(path: str | Path) -> list[tuple[str, str]]:
    """Rows (filename, wnid) of a Ravi & Larochelle split CSV; checks the ``filename,label`` header.

    Raises:
        BadFileError: the file is empty, an HTML page, not UTF-8 text, truncated, or has another header.
        DatasetNotFoundError: there is no file at ``path``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"no split file at {path}; {CSV_FIX}") from err
    except OSError as err:                             # e.g. no permission to read it
        raise bad_file(path, "csv", f"make it readable or {CSV_FIX}", err) from err
    if not raw or looks_like_html(raw[:64]):
        raise bad_file(path, "csv", CSV_FIX)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problem = f"is not a CSV text file (byte {err.start} is not UTF-8 text; it begins with {raw[:16]!r})"
        raise bad_file(path, "csv", CSV_FIX, err, problem=problem) from err
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows or [c.strip() for c in rows[0]] != CSV_HEADER:
        found = repr(rows[0])[:100] if rows else "only blank lines"
        raise BadFileError(f"{path}: expected the header 'filename,label' of the Ravi & Larochelle split "
                           f"files, found {found}; {CSV_FIX}")
    if len(rows) > 1 and not text.endswith(("\n", "\r")) and _truncated_row(rows[-1], rows[-2]):
        problem = (f"is truncated ({len(raw):,} bytes; it ends in the middle of row {len(rows)}, "
                   f"{','.join(rows[-1])[:60]!r})")
        raise bad_file(path, "csv", CSV_FIX, problem=problem)
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != 2]
    if bad:
        raise BadFileError(f"{path}: rows {bad[:5]} do not have exactly two columns (filename,label), so the "
                           f"file is damaged; {CSV_FIX}")
    return [(r[0].strip(), r[1].strip()) for r in rows[1:]]


def _read_jpeg(path: Path, fix: str = IMAGES_FIX) -> tuple[np.ndarray, bool]:
    """(84, 84, 3) uint8 and whether it had to be resized (PIL LANCZOS, as the original did).

    Raises:
        BadFileError: ``path`` is empty, truncated, an HTML page or not a JPEG/PNG; the message ends
            in ``fix``.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            resized = img.size != (SIZE, SIZE)
            if resized:
                img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8), resized
    except IMAGE_ERRORS as err:
        raise bad_file(path, "image", fix, err) from err


def _read_files(files_and_wnids: list[tuple[Path, str]], desc: str, progress: bool, fix: str = IMAGES_FIX):
    """(images (N, 84, 84, 3), labels (N,), wnids): classes sorted by wnid, images by file name."""
    items = sorted(files_and_wnids, key=lambda fw: (fw[1], fw[0].name))
    paths = [p for p, _ in items]
    wnids, labels = np.unique([w for _, w in items], return_inverse=True)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} of {len(paths)} images of {desc} are missing, e.g. "
                                   f"{[str(p) for p in missing[:3]]}. The images/ folder is incomplete: "
                                   "unzip the whole images.zip there.")
    out = np.empty((len(paths), SIZE, SIZE, 3), dtype=np.uint8)
    n_resized = 0
    # PIL decodes without the GIL; the bar is closed (its line ended) even when an image is bad
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(paths), desc=f"decoding {desc}", disable=not progress) as bar:
        for i, (img, resized) in enumerate(pool.map(partial(_read_jpeg, fix=fix), paths)):
            out[i] = img
            n_resized += resized
            bar.update()
    if n_resized:
        print(f"mini-ImageNet {desc}: resized {n_resized} of {len(paths)} images to {SIZE}x{SIZE} "
              "with PIL LANCZOS, as the original preprocessing did.")
    return out, labels.astype(np.int64), wnids.tolist()


def read_images_csv(root: str | Path, split: str, progress: bool = True):
    """Layout (a): ``images/`` + ``<split>.csv`` → (images (N,84,84,3), labels (N,), wnids)."""
    root = Path(root)
    pairs = [(root / "images" / f, w) for f, w in read_split_csv(root / f"{split}.csv")]
    return _read_files(pairs, f"{split} (images/ + {split}.csv)", progress)


def read_class_folders(root: str | Path, split: str, progress: bool = True):
    """Layout (b): ``<split>/<wnid>/*.jpg`` → (images, labels, wnids)."""
    folder = Path(root) / split
    pairs = [(p, d.name) for d in folder.iterdir() if d.is_dir()
             for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return _read_files(pairs, f"{split} ({split}/<wnid>/ folders)", progress, FOLDERS_FIX)


def read_pickle(root: str | Path, split: str):
    """Layout (c): learn2learn's pickle → (images, labels, wnids), with the allow-list unpickler."""
    path = Path(root) / PICKLE_NAMES[split]
    data = safe_load(path, fix=PICKLE_FIX)
    if not (isinstance(data, dict) and {"image_data", "class_dict"} <= set(data)):
        raise BadFileError(f"{path} is not a learn2learn mini-ImageNet cache: expected a dict with "
                           f"'image_data' and 'class_dict', got {type(data).__name__}"
                           + (f" with keys {sorted(map(str, data))[:10]}" if isinstance(data, dict) else "")
                           + f"; {PICKLE_FIX}")
    images = data["image_data"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[3] == 3):
        raise BadFileError(f"{path}: image_data must be uint8 (N, H, W, 3), got "
                           f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}; "
                           f"{PICKLE_FIX}")
    try:
        wnids = sorted(data["class_dict"])
        rows = [(int(i), c) for c, w in enumerate(wnids) for i in sorted(data["class_dict"][w])]
        idx = np.array([i for i, _ in rows], dtype=np.int64)
        labels = np.array([c for _, c in rows], dtype=np.int64)
        images = images[idx]
    except (TypeError, ValueError, IndexError, AttributeError) as err:
        raise BadFileError(f"{path}: its class_dict does not map wnids to rows of image_data "
                           f"({one_line(err, limit=120)}); {PICKLE_FIX}") from err
    if images.shape[1:3] != (SIZE, SIZE):
        images = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
                           for im in images])
        print(f"mini-ImageNet {split} (pickle): resized {len(images)} images to {SIZE}x{SIZE} "
              "with PIL LANCZOS.")
    return images, labels, wnids


def load_miniimagenet(root: str | Path | None = None, split: str = "train", *,
                      cache_dir: str | Path | None = None, rebuild: bool = False,
                      progress: bool = True) -> ClassImages:
    """One split of mini-ImageNet as classes of (84, 84, 3) uint8 images.

    Args:
        root: the dataset folder (default ``<data root>/miniimagenet``, see
            :mod:`mamlbook.data.paths`), holding any of the three layouts.
        split: "train" (64 classes), "val" (16) or "test" (20).
        cache_dir: where ``mini-imagenet-<split>.npz`` is kept (default: ``root``).
        rebuild: ignore an existing cache and read the source files again.
        progress: show a progress bar while decoding JPEGs.
    Raises:
        DatasetNotFoundError: no layout found (the message says where to get the data).
        BadFileError: a CSV, image, pickle or cache that is empty, truncated, an HTML page or in
            the wrong format (the one-line message names the file and what to do).
        UnsafePickleError: a pickle that names anything but NumPy arrays and containers.

    A file that cannot be used is left as it is; a cache that cannot be read is rebuilt from the
    source files (and replaced only once the new one is complete).
    """
    split = _split_name(split)
    root = Path(root) if root is not None else default_data_root() / "miniimagenet"
    cache = Path(cache_dir or root) / f"mini-imagenet-{split}.npz"
    fake = (root / FAKE_MARKER).exists()
    cached, cache_error = None, None
    if cache.is_file() and not rebuild:
        keys = ("images", "labels", "wnids", "source_format", "fake")
        cached, cache_error = read_cache(cache, CACHE_VERSION, keys)
    if cache_error is not None:
        warnings.warn(f"the mini-ImageNet cache {cache} cannot be read ({one_line(cache_error)}); "
                      "reading the source files again", stacklevel=2)
    if cached is not None:
        images, labels, fmt = cached["images"], cached["labels"], str(cached["source_format"])
        wnids, fake = [str(w) for w in cached["wnids"]], fake or bool(cached["fake"])
    else:
        try:
            fmt = detect_format(root, split)
        except DatasetNotFoundError as err:
            if cache_error is None:
                raise
            fix = (f"it is the only copy of the {split} split here (no source files in {root}): delete it "
                   f"and put the dataset in {root} (see docs/data.md)")
            raise bad_file(cache, "npz", fix, cache_error) from err
        read = {"csv": read_images_csv, "folders": read_class_folders}.get(fmt)
        images, labels, wnids = read(root, split, progress) if read else read_pickle(root, split)
        write_cache(cache, "mini-ImageNet", images=images, labels=labels, wnids=np.array(wnids),
                    source_format=np.array(fmt), fake=np.array(fake), version=np.array(CACHE_VERSION))
    if fake:
        print(f"FAKE DATA: {root} is a generated stand-in for mini-ImageNet, not the real images.")
    return ClassImages.from_flat(images, labels, wnids, fake=fake, meta={"format": fmt, "root": str(root)},
                                 name=("FAKE " if fake else "") + f"mini-imagenet/{split}")


def verify_miniimagenet(root: str | Path) -> dict[str, str]:
    """Check a user's mini-ImageNet against the published facts; return {split: layout found}.

    Checks: every split is present in some layout; the CSVs (when used) have the published
    SHA-256; each split has 64/16/20 classes of 600 images of 84×84 (decoding the split once
    and caching it). Raises with a message that says what is wrong and what to do.
    """
    root = Path(root)
    report = {}
    for split in SPLITS:
        fmt = detect_format(root, split)
        if fmt == "csv":
            got = file_hash(root / f"{split}.csv")
            if got != CSV_SHA256[split]:
                raise BadFileError(f"{root / f'{split}.csv'} has sha256 {got}, not the published "
                                   f"{CSV_SHA256[split]}: it is not Ravi & Larochelle's {split}.csv; "
                                   f"{CSV_FIX}")
        s = load_miniimagenet(root, split, progress=False)
        if s.num_classes != NUM_CLASSES[split] or bool((s.counts != IMAGES_PER_CLASS).any()):
            raise BadFileError(f"{split}: {s.num_classes} classes with {sorted(set(s.counts.tolist()))} "
                               f"images each; mini-ImageNet has {NUM_CLASSES[split]} classes of "
                               f"{IMAGES_PER_CLASS}. The copy in {root} is incomplete or a different "
                               "dataset; see docs/data.md for the files to get.")
        report[split] = fmt
    return report
