"""Omniglot (Lake et al. 2015) as 28×28 uint8 character classes, with the standard splits.

Chapters 5, 6 and 8.

The sources (official zips or their extracted folders, the small sets downloaded with their SHA-256,
the full sets through ``torchvision.datasets.Omniglot``), the conventions (classes sorted by name,
strokes inverted to bright, resized to 28×28, rotations as extra classes) and the split presets
``"small"``, ``"vinyals"`` and ``"maml"``: docs/data.md, section "Omniglot".
"""
from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import BadFileError, OptionError
from .download import download, file_hash
from .episodes import ClassImages, check_disjoint
from .fake import FAKE_MARKER, make_fake_omniglot
from .files import IMAGE_ERRORS, DatasetNotFoundError, bad_bytes, bad_file, one_line, read_cache, write_cache
from .paths import data_roots, default_cache_dir, default_data_root, find_data

__all__ = ["SIZE", "SMALL_SHA256", "FULL_MD5", "RESIZE_MODES", "HELP", "decode", "read_omniglot",
           "concat_sets", "vinyals_split", "maml_split", "small_split", "find_full_sets", "omniglot_splits",
           "download_omniglot_small", "download_omniglot_full", "find_omniglot_small"]

SIZE = 28
CACHE_VERSION = 1
OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"   # + /<set>.zip
SMALL_SHA256 = {
    "images_background_small1": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
FULL_MD5 = {  # the only checksums published for the full sets (torchvision uses them)
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
SMALL_TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_NUM_TEST = 423
MAML_SEED, MAML_NUM_TRAIN, MAML_NUM_VAL = 1, 1100, 100
RESIZE_MODES = ("lanczos", "maml-original")
HELP = ("Get Omniglot from https://github.com/brendenlake/omniglot (folder python/): the small "
        "sets with mamlbook.data.download_omniglot_small(), the full sets with "
        "mamlbook.data.download_omniglot_full(); or put the zips in {where}. See docs/data.md.")
# What reading a damaged zip member can raise (zipfile and zlib each have their own); a PNG: IMAGE_ERRORS.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, struct.error)


def _fix(source: Path) -> str:
    """What to do about a bad Omniglot zip or folder: how to get the same set again."""
    for sums, folder, kind in ((SMALL_SHA256, "omniglot", "small"), (FULL_MD5, "omniglot-py", "full")):
        if _set_name(source) in sums:
            root = source.parent.parent if source.parent.name == folder else source.parent
            return (f"delete it and download again with "
                    f"mamlbook.data.download_omniglot_{kind}({str(root)!r}) (see docs/data.md)")
    return ("replace it with the official zip from https://github.com/brendenlake/omniglot (folder python/), "
            "unchanged (see docs/data.md)")


def _open_zip(source: Path) -> zipfile.ZipFile:
    """``zipfile.ZipFile(source)``, or a one-line BadFileError saying what the file is instead."""
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as err:
        raise bad_file(source, "zip", _fix(source), err) from err


def _iter_pngs(source: Path) -> Iterator[tuple[str, str, str, str, bytes]]:
    """Yield (alphabet, character, file name, where, PNG bytes) from a zip or an extracted folder.

    ``where`` names the PNG for messages ("<zip>: <member>" or its path).
    """
    if source.is_file():
        with _open_zip(source) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                if name.lower().endswith(".png") and len(parts) >= 3:
                    try:
                        data = zf.read(name)
                    except _ZIP_ERRORS as err:
                        raise BadFileError(one_line(f"{source} is damaged: its member {name} cannot be read "
                                                    f"({one_line(err, limit=120)}); {_fix(source)}")) from err
                    yield parts[-3], parts[-2], parts[-1], f"{source}: {name}", data
    else:
        for path in source.rglob("*.png"):
            try:
                data = path.read_bytes()
            except OSError as err:                     # e.g. no permission to read it
                raise bad_file(path, "png", f"make it readable or replace it; {_fix(source)}", err) from err
            yield path.parent.parent.name, path.parent.name, path.name, str(path), data


def _is_fake(source: Path) -> bool:
    if source.is_file():
        with _open_zip(source) as zf:
            return any(n.endswith(FAKE_MARKER) for n in zf.namelist())
    return (source / FAKE_MARKER).exists()


def decode(png: bytes, size: int = SIZE, resize: str = "lanczos") -> np.ndarray:
    """One Omniglot PNG → (size, size) uint8 with bright strokes (inverted).

    ``resize``: "lanczos" (smooth, anti-aliased strokes) or "maml-original" (binary, as cbfinn/maml's
    ``resize_images.py`` made them): docs/data.md, section "Omniglot".
    """
    img = Image.open(io.BytesIO(png))
    if resize == "lanczos":
        img = img.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    elif resize == "maml-original":
        img = img.resize((size, size), Image.Resampling.LANCZOS).convert("L")
    else:
        raise OptionError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return 255 - np.asarray(img, dtype=np.uint8)       # white paper → 0, black ink → 255


def _source_id(source: Path) -> str:
    if source.is_file():
        return file_hash(source)
    h = hashlib.sha256()
    for p in sorted(source.rglob("*.png")):
        h.update(f"{p.relative_to(source)}:{p.stat().st_size};".encode())
    return h.hexdigest()


def _set_name(source: Path) -> str:
    return source.name.removesuffix(".zip")


def _decode_png(png: bytes, where: str, source: Path, size: int, resize: str) -> np.ndarray:
    try:
        return decode(png, size, resize)              # resize is checked by read_omniglot, the only caller
    except IMAGE_ERRORS as err:
        fix = (_fix(source) if source.is_file() else
               f"replace it with a good copy (unzip the official zip again); {_fix(source)}")
        raise bad_bytes(where, png, "png", fix, err) from err


def _decode_all(source: Path, size: int, resize: str):
    items = sorted(_iter_pngs(source), key=lambda it: (it[0], it[1], it[2]))
    if not items:
        if source.is_file():
            raise BadFileError(f"{source} holds no Omniglot PNGs (<Alphabet>/characterNN/*.png), so it is "
                               f"not an Omniglot zip; {_fix(source)}")
        raise DatasetNotFoundError(f"no Omniglot PNGs (Alphabet/characterNN/*.png) in {source}. "
                                   + HELP.format(where=source.parent))
    class_names, labels = np.unique([f"{a}/{c}" for a, c, _, _, _ in items], return_inverse=True)  # sorted
    images = np.stack([_decode_png(png, where, source, size, resize)
                       for _, _, _, where, png in items])                        # (N, size, size)
    return dict(images=images, labels=labels.astype(np.int64), class_names=class_names,
                files=np.array([f for _, _, f, _, _ in items]))


def read_omniglot(source: str | Path, *, size: int = SIZE, resize: str = "lanczos",
                  cache_dir: str | Path | None = None, cache: bool = True) -> ClassImages:
    """Read one Omniglot set (zip or extracted folder) as classes of (size, size, 1) uint8 images.

    Args:
        source: e.g. ``images_background_small1.zip``, ``.../omniglot-py/images_background``.
        size: output side in pixels (28 in MAML).
        resize: ``"lanczos"`` or ``"maml-original"`` (see :func:`decode`).
        cache_dir: where the decoded arrays are cached as ``.npz`` (default
            :func:`mamlbook.data.paths.default_cache_dir`); a second read takes milliseconds.
        cache: set False to neither read nor write the cache.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetNotFoundError(f"Omniglot set not found: {source}. " + HELP.format(where=source.parent))
    if resize not in RESIZE_MODES:
        raise OptionError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    try:
        sid = _source_id(source)
    except OSError as err:                             # e.g. no permission to read it
        raise bad_file(source, "zip", f"make it readable or replace it; {_fix(source)}", err) from err
    cache_name = f"omniglot-{_set_name(source)}-{size}px-{resize}.npz"
    cache_file = Path(cache_dir or default_cache_dir()) / cache_name
    keys = ("images", "labels", "class_names", "files")
    arrays = read_cache(cache_file, CACHE_VERSION, keys, source_id=sid)[0] if cache else None  # None: decode
    if arrays is None:
        arrays = _decode_all(source, size, resize)
        if cache:
            write_cache(cache_file, "Omniglot", **arrays, source_id=np.array(sid),
                            version=np.array(CACHE_VERSION))
    fake, set_name = _is_fake(source), _set_name(source)
    first = np.unique(arrays["labels"], return_index=True)[1]          # each class's first file
    char_ids = [int(f.split("_")[0]) if f.split("_")[0].isdigit() else -1 for f in arrays["files"][first]]
    return ClassImages.from_flat(arrays["images"], arrays["labels"], [str(n) for n in arrays["class_names"]],
                                 name=("FAKE " if fake else "") + f"omniglot/{set_name}", fake=fake,
                                 meta={"set": set_name, "char_ids": char_ids, "size": size, "resize": resize})


def concat_sets(sets: Sequence[ClassImages], name: str) -> ClassImages:
    """Several sets (e.g. background + evaluation) as one, classes in the given order."""
    meta = {"set_of_class": [s.meta.get("set", "") for s in sets for _ in s.class_names]}
    return ClassImages(torch.cat([s.images for s in sets]), torch.cat([s.counts for s in sets]),
                       [n for s in sets for n in s.class_names], name=name,
                       fake=any(s.fake for s in sets), meta=meta)


def vinyals_split(background: Sequence[str], evaluation: Sequence[str]) -> dict[str, list[int]]:
    """Indices into ``sorted(background) + sorted(evaluation)`` for the 1028/172/423 split.

    Args:
        background, evaluation: the ``Alphabet/characterNN`` names of the two full sets.
    """
    names = sorted(background) + sorted(evaluation)
    if len(background) != 964 or len(evaluation) != 659:
        raise BadFileError(f"the Vinyals split needs the full Omniglot sets (964 background + 659 "
                         f"evaluation characters), got {len(background)} + {len(evaluation)}; get them with "
                         "mamlbook.data.download_omniglot_full(DIR) (see docs/data.md)")
    first = len(names) - VINYALS_NUM_TEST
    val = [i for i in range(first) if names[i].split("/")[0] in VINYALS_VAL_ALPHABETS]
    train = [i for i in range(first) if names[i].split("/")[0] not in VINYALS_VAL_ALPHABETS]
    return {"train": train, "val": val, "test": list(range(first, len(names)))}


def maml_split(names: Sequence[str], seed: int = MAML_SEED) -> dict[str, list[int]]:
    """Indices into ``names`` for MAML's random 1100/100/rest split of the sorted characters."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    random.Random(seed).shuffle(order)                 # as random.seed(1); random.shuffle(...)
    a, b = MAML_NUM_TRAIN, MAML_NUM_TRAIN + MAML_NUM_VAL
    if len(names) <= b:
        raise BadFileError(f"the MAML split needs more than {b} characters (the full Omniglot sets), got "
                           f"{len(names)}; get them with mamlbook.data.download_omniglot_full(DIR) "
                           "(see docs/data.md)")
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def small_split(small1: ClassImages, small2: ClassImages) -> dict[str, ClassImages]:
    """Meta-train on all of small1, meta-test on small2's alphabets that small1 lacks."""
    test_idx = [i for i, n in enumerate(small2.class_names) if n.split("/")[0] in SMALL_TEST_ALPHABETS]
    splits = {"train": small1.subset(range(small1.num_classes), name=f"{small1.name}/train"),
              "test": small2.subset(test_idx, name=f"{small2.name}/test")}
    check_disjoint(splits)
    return splits


def find_full_sets(root: str | Path) -> tuple[Path, Path]:
    """The full-set zips (or folders) under ``root`` in torchvision's layout or next to it."""
    root = Path(root)
    for folder in (root / "omniglot-py", root / "omniglot", root):
        pairs = ((folder / f"{s}.zip", folder / s) for s in ("images_background", "images_evaluation"))
        found = [z if z.is_file() else d if d.is_dir() else None for z, d in pairs]
        if all(found):
            return found[0], found[1]
    raise DatasetNotFoundError(f"the full Omniglot sets are not under {root} (looked for "
                            "omniglot-py/images_background.zip and images_evaluation.zip). Run "
                            f"mamlbook.data.download_omniglot_full({str(root)!r}) to get them.")


def omniglot_splits(preset: str = "small", root: str | Path | None = None, *,
                    rotations: Sequence[int] = (0, 90, 180, 270), **read_kwargs) -> dict[str, ClassImages]:
    """Class-disjoint meta-train/val/test splits of Omniglot, with rotated copies as classes.

    Args:
        preset: ``"small"``, ``"vinyals"`` or ``"maml"`` (see docs/data.md, section "Omniglot").
        root: folder with the data: for ``"small"``, the two ``images_background_small*.zip``
            (default: found by :func:`find_omniglot_small`); for the full presets, the folder
            given to :func:`download_omniglot_full`.
        rotations: degrees; each rotation of a character is a class. ``(0,)`` for none.
        read_kwargs: passed to :func:`read_omniglot` (size, resize, cache_dir, cache).
    """
    if preset == "small":
        small1, small2 = (find_omniglot_small(download=False, allow_fake=False)[:2] if root is None
                          else (_find_small(Path(root), n) for n in (1, 2)))
        splits = small_split(read_omniglot(small1, **read_kwargs), read_omniglot(small2, **read_kwargs))
    elif preset in ("vinyals", "maml"):
        bg_src, ev_src = find_full_sets(default_data_root() if root is None else root)
        bg, ev = read_omniglot(bg_src, **read_kwargs), read_omniglot(ev_src, **read_kwargs)
        full = concat_sets([bg, ev], name=f"omniglot-{preset}")
        # concat order is sorted(background) + sorted(evaluation), as vinyals_split indexes
        idx = (vinyals_split(bg.class_names, ev.class_names) if preset == "vinyals"
               else maml_split(full.class_names))
        splits = {k: full.subset(v, name=f"{full.name}/{k}") for k, v in idx.items()}
    else:
        raise OptionError(f"unknown Omniglot split preset {preset!r}; use 'small', 'vinyals' or 'maml'")
    check_disjoint(splits)
    return {k: s.with_rotations(rotations) for k, s in splits.items()}


def _find_small(root: Path, n: int) -> Path:
    name = f"images_background_small{n}"
    for p in (root / f"{name}.zip", root / "omniglot" / f"{name}.zip", root / name, root / "omniglot" / name):
        if p.exists():
            return p
    raise DatasetNotFoundError(f"{name}.zip is not in {root} or {root / 'omniglot'}. "
                            + HELP.format(where=root / "omniglot"))


def download_omniglot_small(root: str | Path | None = None, *, base_url: str | None = None,
                            **download_kwargs) -> tuple[Path, Path]:
    """Download (and SHA-256-check) the two small background sets to ``<root>/omniglot/``.

    ``root`` defaults to :func:`mamlbook.data.paths.default_data_root`; ``base_url`` replaces
    the upstream ``https://raw.githubusercontent.com/brendenlake/omniglot/master/python``.
    """
    folder = Path(root or default_data_root()) / "omniglot"
    base = (base_url or OMNIGLOT_URL).rstrip("/")
    return tuple(download(f"{base}/{name}.zip", folder / f"{name}.zip", sha256=sha, **download_kwargs)
                 for name, sha in SMALL_SHA256.items())


def download_omniglot_full(root: str | Path | None = None) -> tuple[Path, Path]:
    """Download the full background and evaluation sets with ``torchvision.datasets.Omniglot``.

    torchvision checks the published MD5 and extracts to ``<root>/omniglot-py/``; we then
    read the zips with :func:`read_omniglot` (sorted classes, unlike torchvision's listing).
    """
    from torchvision.datasets import Omniglot  # here, not at the top: importing it takes ~1.3 s

    root = Path(root or default_data_root())
    for background in (True, False):
        Omniglot(str(root), background=background, download=True)
    return find_full_sets(root)


def find_omniglot_small(download: bool = True, allow_fake: bool = True) -> tuple[Path, Path, str]:
    """Locate the small sets: (small1, small2, origin) with origin "found", "downloaded" or "FAKE".

    Looks in :func:`mamlbook.data.paths.data_roots` (``$MAMLBOOK_DATA``, the checkout's
    ``data/``, ``../shared/data``) under ``omniglot/``; then downloads them (``download``);
    then, if ``allow_fake``, writes a generated stand-in in the same format (for tests and
    fast mode only; everything made from it must say FAKE on screen).
    """
    names = [f"omniglot/images_background_small{n}.zip" for n in (1, 2)]
    root = find_data(*names)
    if root is not None:
        return root / names[0], root / names[1], "found"
    error = None
    if download:
        try:
            return (*download_omniglot_small(retries=1, timeout=10), "downloaded")
        except Exception as e:                         # no network: fall through to the stand-in
            error = e
    if allow_fake:
        folder = default_cache_dir() / "fake-omniglot"
        a, b = (make_fake_omniglot(folder / f"images_background_small{n}.zip", small=n) for n in (1, 2))
        print(f"FAKE DATA: Omniglot was not found{' or downloaded' if download else ''}; using a "
              f"generated stand-in in {folder}. Its pictures are NOT Omniglot characters.")
        return a, b, "FAKE"
    raise DatasetNotFoundError(f"the small Omniglot sets were not found in {[str(r) for r in data_roots()]}. "
                               + HELP.format(where="data/omniglot/")
                               + (f" ({one_line(error, limit=200)})" if error else ""))
