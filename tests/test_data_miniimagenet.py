"""mini-ImageNet loaders on small fixtures written in every real on-disk layout."""
import csv
import shutil

import numpy as np
import pytest
import torch
from data_fixtures import MINI_CSVS, needs_mini_csvs
from PIL import Image

from mamlbook.data import (
    DatasetNotFoundError,
    EpisodeSampler,
    load_miniimagenet,
    make_fake_miniimagenet,
    verify_miniimagenet,
)
from mamlbook.data.fake import fake_class_image
from mamlbook.data.miniimagenet import CSV_SHA256

SMALL = dict(classes_per_split=(3, 2, 2), images_per_class=6, csv_dir=None)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The same fake dataset in all three layouts: {layout: (root, truth)}."""
    out = {}
    for fmt in ("csv", "folders", "pickle"):
        root = tmp_path_factory.mktemp(fmt)
        out[fmt] = root, make_fake_miniimagenet(root, fmt, **SMALL)
    return out


@pytest.mark.parametrize("fmt", ["csv", "folders", "pickle"])
def test_every_layout_loads_sorted_classes_of_84x84x3(fixtures, fmt, tmp_path):
    root, truth = fixtures[fmt]
    split = load_miniimagenet(root, "train", cache_dir=tmp_path, progress=False)
    assert split.class_names == sorted(truth["train"]) == ["n90000000", "n90000001", "n90000002"]
    assert split.images.shape == (3, 6, 84, 84, 3) and split.images.dtype == torch.uint8
    assert split.meta["format"] == fmt and split.fake and split.name.startswith("FAKE")


@pytest.mark.parametrize("fmt", ["csv", "folders", "pickle"])
def test_pixels_are_the_generated_images(fixtures, fmt, tmp_path):
    root, _ = fixtures[fmt]
    split = load_miniimagenet(root, "val", cache_dir=tmp_path, progress=False)
    want = fake_class_image(3 + 1, 2).astype(float)     # val class 1 is the 5th class generated; image 2
    got = split.images[1, 2].numpy().astype(float)
    if fmt == "pickle":
        assert np.array_equal(got, want)                # pickles hold the exact arrays
    else:                                               # JPEG is lossy: same colour, nearest class
        assert np.abs(got.mean((0, 1)) - want.mean((0, 1))).max() < 2
        others = [fake_class_image(c, 2).astype(float) for c in range(7) if c != 4]
        assert np.abs(got - want).mean() < min(np.abs(got - o).mean() for o in others) / 3


def test_layouts_agree_pixel_for_pixel(fixtures, tmp_path):
    a = load_miniimagenet(fixtures["csv"][0], "test", cache_dir=tmp_path / "a", progress=False)
    b = load_miniimagenet(fixtures["folders"][0], "test", cache_dir=tmp_path / "b", progress=False)
    assert torch.equal(a.images, b.images) and a.class_names == b.class_names


def test_first_load_writes_a_uint8_cache_that_later_loads_use(fixtures, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fixtures["csv"][0], root)
    first = load_miniimagenet(root, "train", progress=False)
    with np.load(root / "mini-imagenet-train.npz") as z:
        assert z["images"].shape == (18, 84, 84, 3) and z["images"].dtype == np.uint8
    shutil.rmtree(root / "images")                       # the cache alone must do now
    again = load_miniimagenet(root, "train", progress=False)
    assert torch.equal(again.images, first.images) and again.class_names == first.class_names


def test_images_not_84x84_are_resized_with_lanczos(tmp_path, capsys):
    make_fake_miniimagenet(tmp_path, "folders", image_size=(100, 120), **SMALL)
    split = load_miniimagenet(tmp_path, "train", progress=False)
    path = sorted((tmp_path / "train" / "n90000000").iterdir())[0]
    ref = np.asarray(Image.open(path).convert("RGB").resize((84, 84), Image.LANCZOS))
    assert np.array_equal(split.images[0, 0].numpy(), ref)
    assert "resized 18 of 18 images to 84x84 with PIL LANCZOS" in capsys.readouterr().out


def test_missing_folder_says_where_to_get_the_data_and_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_miniimagenet(tmp_path / "nowhere", "train")
    msg = str(err.value)
    assert "\n" not in msg                               # the command line shows it as one line
    assert "does not exist" in msg and "github.com/twitter/meta-learning-lstm" in msg
    assert f"{tmp_path / 'nowhere'}/images/n0153282900000005.jpg" in msg
    assert "mini-imagenet-cache-train.pkl" in msg


def test_wrong_csv_header_is_a_clear_error(fixtures, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fixtures["csv"][0], root)
    text = (root / "train.csv").read_text().replace("filename,label", "image,class", 1)
    (root / "train.csv").write_text(text)
    with pytest.raises(ValueError, match=r"expected the header 'filename,label'.*found \['image', 'class'\]"):
        load_miniimagenet(root, "train", progress=False)


def test_missing_images_listed_in_the_csv_are_reported(fixtures, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fixtures["csv"][0], root)
    victim = sorted((root / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetNotFoundError, match=f"1 of 18 images .* missing.*{victim.name}"):
        load_miniimagenet(root, "train", progress=False)


def test_class_with_too_few_images_for_k_plus_q(tmp_path):
    make_fake_miniimagenet(tmp_path, "folders", **SMALL)
    for p in sorted((tmp_path / "train" / "n90000001").iterdir())[2:]:
        p.unlink()                                       # n90000001 keeps 2 images
    split = load_miniimagenet(tmp_path, "train", progress=False)
    assert split.counts.tolist() == [6, 2, 6]
    with pytest.raises(ValueError, match=r"fewer than K \+ Q = 1 \+ 2 = 3 images, e\.g\. \[\('n90000001', 2\)\]"):
        EpisodeSampler(split, n_way=3, k_shot=1, k_query=2)


def test_verify_rejects_csvs_that_are_not_the_published_ones(fixtures):
    with pytest.raises(ValueError, match="not the published"):
        verify_miniimagenet(fixtures["csv"][0])


@needs_mini_csvs
def test_published_csv_checksums_match_the_real_files():
    from mamlbook.data import file_hash
    assert {s: file_hash(MINI_CSVS / f"{s}.csv") for s in ("train", "val", "test")} == CSV_SHA256


@needs_mini_csvs
def test_real_csvs_give_64_16_20_classes_of_600():
    from mamlbook.data import read_split_csv
    rows = {s: read_split_csv(MINI_CSVS / f"{s}.csv") for s in ("train", "val", "test")}
    assert {s: len({w for _, w in r}) for s, r in rows.items()} == {"train": 64, "val": 16, "test": 20}
    assert {s: len(r) for s, r in rows.items()} == {"train": 38400, "val": 9600, "test": 12000}


@needs_mini_csvs
def test_fake_stand_in_uses_real_wnids_and_file_names(tmp_path):
    truth = make_fake_miniimagenet(tmp_path, "csv", classes_per_split=(2, 1, 1), images_per_class=3,
                                   csv_dir=MINI_CSVS)
    with open(MINI_CSVS / "train.csv", newline="") as f:
        real = [r for r in csv.DictReader(f)]
    first_wnid = sorted({r["label"] for r in real})[0]
    assert list(truth["train"])[0] == first_wnid
    assert truth["train"][first_wnid] == [r["filename"] for r in real if r["label"] == first_wnid][:3]
    assert (tmp_path / "images" / truth["train"][first_wnid][0]).is_file()
