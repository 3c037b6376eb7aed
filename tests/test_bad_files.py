"""Bad files get one-line messages: each loader × {corrupt, empty, truncated, HTML}, directly and via the CLI.

Every loader reads real-format files (Omniglot zips of PNGs, mini-ImageNet CSVs, JPEGs, PNGs and
learn2learn pickles, checkpoints) made good and then spoiled as downloads and disks spoil them
(``data_fixtures.spoil``). Each must fail with a :class:`~mamlbook.errors.MamlbookError` whose message
is one line naming the file, what is wrong and what to do; ``python -m mamlbook`` must turn it into
``error: ...`` and exit code 2; and no file already on disk may change (bytes and mtimes).
"""
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import FAILURES, SMALL1, needs_omniglot, snapshot, spoil
from PIL import Image

from mamlbook.data import (
    BadPickleError,
    DatasetNotFoundError,
    UnsafePickleError,
    load_miniimagenet,
    make_fake_miniimagenet,
    make_fake_omniglot,
    omniglot_splits,
    read_omniglot,
)
from mamlbook.errors import BadFileError, MamlbookError
from mamlbook.runs import CheckpointError, load_checkpoint, save_checkpoint

MINI = dict(classes_per_split=(3, 2, 2), images_per_class=6, csv_dir=None)
SMALL_FIX = "delete it and download again with mamlbook.data.download_omniglot_small("
CSV_FIX = "download it again from https://github.com/twitter/meta-learning-lstm/tree/master/data/miniImagenet"
IMAGES_FIX = "replace it with the same file from Ravi & Larochelle's images.zip"
FOLDERS_FIX = "replace it with a good copy (or make the class folders again from images.zip"
PICKLE_FIX = "delete it and download learn2learn's mini-ImageNet cache files again"


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Good data in every format a loader reads, written once: {name: folder}."""
    base = tmp_path_factory.mktemp("originals")
    for n in (1, 2):
        make_fake_omniglot(base / "omniglot" / f"images_background_small{n}.zip", small=n,
                           characters_per_alphabet=2, drawers=2)
    for fmt in ("csv", "folders", "pickle"):
        make_fake_miniimagenet(base / f"mini-{fmt}", fmt, **MINI)
    jpg = sorted((base / "mini-folders" / "train" / "n90000001").iterdir())[0]
    Image.open(jpg).save(jpg.with_suffix(".png"))          # class folders may hold PNGs too
    jpg.unlink()
    save_checkpoint(base / "run" / "checkpoint.pt", {"config": {"preset": "sinusoid"}, "w": torch.zeros(3)})
    return base


def first_png_member(zip_path: Path) -> str:
    with zipfile.ZipFile(zip_path) as zf:
        return next(n for n in zf.namelist() if n.endswith(".png"))


def replace_member(zip_path: Path, member: str, data: bytes) -> None:
    """Rewrite ``zip_path`` with ``member``'s bytes replaced (a zip that is fine but holds a bad PNG)."""
    with zipfile.ZipFile(zip_path) as src:
        items = [(info, data if info.filename == member else src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(zip_path, "w") as dst:
        for info, body in items:
            dst.writestr(info, body)


# kind → (folder in `originals`, the file spoiled in it, where the corruption goes, what it should be, fix)
KINDS = {
    "omniglot-zip": ("omniglot", "images_background_small1.zip", "middle", "a zip file", SMALL_FIX),
    "omniglot-png": ("omniglot", "images_background_small1.zip", 0, "a PNG image", SMALL_FIX),
    "mini-csv": ("mini-csv", "train.csv", 0, "a CSV text file", CSV_FIX),
    "mini-jpeg": ("mini-csv", "images/n9000000000000001.jpg", 0, "a JPEG or PNG image", IMAGES_FIX),
    "mini-png": ("mini-folders", "train/n90000001/n9000000100000001.png", 0, "a JPEG or PNG image",
                 FOLDERS_FIX),
    "mini-pickle": ("mini-pickle", "mini-imagenet-cache-train.pkl", 0, "a pickle", PICKLE_FIX),
}
CORRUPT = {  # what a file with damaged bytes is said to be
    "omniglot-zip": "is damaged: its member ",
    "omniglot-png": "is not a PNG image (it begins with ",
    "mini-csv": "is not a CSV text file (byte 0 is not UTF-8 text",
    "mini-jpeg": "is not a JPEG or PNG image (it begins with ",
    "mini-png": "is not a JPEG or PNG image (it begins with ",
    "mini-pickle": "is not a pickle (UnpicklingError: invalid load key",
}


def make_bad(kind: str, failure: str, originals: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the good data with one file spoiled: (data folder, how the message names the bad file)."""
    folder, name, at, _, _ = KINDS[kind]
    root = tmp_path / "data"
    shutil.copytree(originals / folder, root)
    path = root / name
    if kind == "omniglot-png":
        member = first_png_member(path)
        with zipfile.ZipFile(path) as zf:
            replace_member(path, member, spoil(zf.read(member), failure))
        return root, f"{path}: {member}"
    data = path.read_bytes()
    path.write_bytes(spoil(data, failure, corrupt_at=len(data) // 2 if at == "middle" else at))
    return root, str(path)


def load(kind: str, root: Path):
    if kind.startswith("omniglot"):
        return omniglot_splits("small", root, cache_dir=root / "cache")
    return load_miniimagenet(root, "train", progress=False)


def expected_problem(kind: str, failure: str) -> str:
    return {"corrupt": CORRUPT[kind], "empty": "is empty (0 bytes); ",
            "truncated": "is truncated (", "html": f"is an HTML page, not {KINDS[kind][3]} ("}[failure]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_loader_says_in_one_line_what_is_wrong_and_what_to_do(kind, failure, originals, tmp_path):
    root, bad = make_bad(kind, failure, originals, tmp_path)
    before = snapshot(root)
    with pytest.raises(BadFileError) as info:
        load(kind, root)
    msg = str(info.value)
    assert isinstance(info.value, MamlbookError) and "\n" not in msg
    assert msg.startswith(f"{bad} {expected_problem(kind, failure)}"), msg
    assert KINDS[kind][4] in msg and msg.endswith("see docs/data.md)")
    assert snapshot(root) == before                  # nothing changed, nothing (cache, temp file) added


@pytest.mark.parametrize("failure", FAILURES)
def test_checkpoint_loader_says_in_one_line_what_is_wrong(failure, originals, tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    path.write_bytes(spoil((originals / "run" / "checkpoint.pt").read_bytes(), failure))
    before = snapshot(path.parent)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, MamlbookError)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path} ")
    assert snapshot(path.parent) == before


def test_a_text_file_named_like_the_zip_is_not_a_zip(tmp_path):
    path = tmp_path / "images_background_small1.zip"
    path.write_bytes(b"alphabet,character,drawer\nGreek,1,1\n")
    with pytest.raises(BadFileError, match=r"^\S+images_background_small1\.zip is not a zip file \(it begins "
                                           r"with b'alphabet,charact'\); delete it and download again"):
        read_omniglot(path, cache=False)


def test_a_zip_without_omniglot_pngs_is_named(tmp_path):
    path = tmp_path / "images_background_small1.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "not Omniglot")
    with pytest.raises(BadFileError, match=r"images_background_small1\.zip holds no Omniglot PNGs .* so it "
                                           r"is not an Omniglot zip; delete it and download again"):
        read_omniglot(path, cache=False)


@needs_omniglot
@pytest.mark.parametrize("failure", ["corrupt", "truncated"])
def test_the_real_small_zip_spoiled_is_named(failure, tmp_path):
    """The real zip is deflated (the fakes are stored): damage shows up in zlib or the CRC check instead."""
    data = SMALL1.read_bytes()
    path = tmp_path / SMALL1.name
    path.write_bytes(spoil(data, failure, corrupt_at=len(data) // 2))
    with pytest.raises(BadFileError) as info:
        read_omniglot(path, cache=False)
    start = {"corrupt": f"{path} is damaged: its member images_background_small1/",
             "truncated": f"{path} is truncated ({len(data) // 2:,} bytes; "}[failure]
    assert str(info.value).startswith(start) and "\n" not in str(info.value)


def test_missing_omniglot_zip_is_both_file_not_found_and_a_mamlbook_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        omniglot_splits("small", tmp_path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, MamlbookError)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"images_background_small1.zip is not in {tmp_path} ")
    assert "mamlbook.data.download_omniglot_small()" in msg


def test_missing_miniimagenet_is_one_line_with_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_miniimagenet(tmp_path / "nowhere", "train")
    msg = str(info.value)
    assert isinstance(info.value, MamlbookError) and "\n" not in msg
    assert msg.startswith(f"mini-ImageNet folder {tmp_path / 'nowhere'} does not exist. mini-ImageNet has ")


class RunsACommand:
    def __reduce__(self):
        return os.system, ("true",)


def test_unsafe_pickle_is_a_one_line_mamlbook_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps({"image_data": RunsACommand()}))
    with pytest.raises(UnsafePickleError) as info:
        load_miniimagenet(root, "train", progress=False)
    assert isinstance(info.value, MamlbookError) and isinstance(info.value, BadPickleError)
    assert str(info.value).startswith(f"{root / 'mini-imagenet-cache-train.pkl'} asks to call or build "
                                      f"{os.system.__module__}.system, which is not a NumPy array")
    assert "\n" not in str(info.value)


def test_damaged_cache_with_no_source_is_named_and_kept(originals, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(originals / "mini-pickle", root)
    load_miniimagenet(root, "train", progress=False)                 # writes mini-imagenet-train.npz
    (root / "mini-imagenet-cache-train.pkl").unlink()                # the cache is all there is now
    cache = root / "mini-imagenet-train.npz"
    cache.write_bytes(spoil(cache.read_bytes(), "truncated"))
    before = snapshot(root)
    with pytest.warns(UserWarning, match="cache .* cannot be read"), pytest.raises(BadFileError) as info:
        load_miniimagenet(root, "train", progress=False)
    assert str(info.value).startswith(f"{cache} is truncated (")
    assert "it is the only copy of the train split here" in str(info.value)
    assert snapshot(root) == before


def test_damaged_cache_is_rebuilt_from_the_source(originals, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(originals / "mini-pickle", root)
    good = load_miniimagenet(root, "train", progress=False)
    cache = root / "mini-imagenet-train.npz"
    cache.write_bytes(spoil(cache.read_bytes(), "truncated"))
    with pytest.warns(UserWarning, match="reading the source files again"):
        again = load_miniimagenet(root, "train", progress=False)
    assert torch.equal(again.images, good.images)
    with np.load(cache) as z:                                        # replaced by a whole cache
        assert z["images"].shape == (18, 84, 84, 3)


def test_a_cache_write_that_fails_leaves_the_old_cache_and_no_temp_file(originals, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(originals / "mini-pickle", root)
    load_miniimagenet(root, "train", progress=False)
    before = snapshot(root)

    def savez_then_disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half a cache")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", savez_then_disk_full)
    with pytest.warns(UserWarning, match="could not write the mini-ImageNet cache .* No space left on dev"):
        load_miniimagenet(root, "train", rebuild=True, progress=False)
    assert snapshot(root) == before                  # the old cache as it was, the temp file gone


# ---------------------------------------------------------------- the same through `python -m mamlbook`

def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MAMLBOOK_FAST": "1",
           "MAMLBOOK_CACHE": str(tmp_path / "cache"), "MAMLBOOK_DATA": str(tmp_path / "data-root")}
    return subprocess.run([sys.executable, "-m", "mamlbook", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def assert_clean_exit_2(proc: subprocess.CompletedProcess, bad: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("error: ") and bad in lines[-1], proc.stderr


CLI_CASES = [("omniglot-zip", f) for f in FAILURES] + [("mini-pickle", f) for f in FAILURES] + \
            [("mini-jpeg", f) for f in FAILURES]


@pytest.mark.parametrize("kind,failure", CLI_CASES)
def test_train_on_a_bad_file_prints_one_error_line_and_exits_2(kind, failure, originals, tmp_path):
    root, bad = make_bad(kind, failure, originals, tmp_path)
    out = tmp_path / "out"
    if kind.startswith("mini"):                      # an earlier run's folder: must stay as it was
        out.mkdir()
        (out / "log.csv").write_text("iteration,loss\n1,1.6\n")
    before, before_out = snapshot(root), snapshot(out) if out.exists() else None
    preset = ["omniglot-5w1s", "--split", "small"] if kind.startswith("omniglot") else ["miniimagenet-5w1s"]
    proc = run_cli(["train", "--preset", *preset, "--data", str(root), "--out", str(out),
                    "--iterations", "1"], tmp_path)
    assert_clean_exit_2(proc, bad.split(": ")[0])
    assert snapshot(root) == before
    assert (snapshot(out) == before_out) if before_out is not None else not out.exists()


@pytest.mark.parametrize("failure", FAILURES)
def test_evaluate_on_a_bad_checkpoint_prints_one_error_line_and_exits_2(failure, originals, tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    path.write_bytes(spoil((originals / "run" / "checkpoint.pt").read_bytes(), failure))
    before = snapshot(path.parent)
    proc = run_cli(["evaluate", "--checkpoint", str(path)], tmp_path)
    assert_clean_exit_2(proc, str(path))
    assert snapshot(path.parent) == before           # no eval.json beside it, the file unchanged


def test_train_without_the_data_prints_one_error_line_and_exits_2(tmp_path):
    """A missing zip (DatasetNotFoundError, a MamlbookError) reaches the command line as one line too."""
    (tmp_path / "data").mkdir()
    proc = run_cli(["train", "--preset", "omniglot-5w1s", "--split", "small", "--data",
                    str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--iterations", "1"], tmp_path)
    assert_clean_exit_2(proc, f"images_background_small1.zip is not in {tmp_path / 'data'}")
    assert not (tmp_path / "out").exists()
