"""Omniglot on the real small zips (skipped without ../shared/data), and the split presets' rules."""
import io
import zipfile

import numpy as np
import pytest
import torch
from data_fixtures import SMALL1, SMALL2, needs_omniglot
from PIL import Image

from mamlbook.data import (
    EpisodeSampler,
    check_disjoint,
    maml_split,
    omniglot_splits,
    read_omniglot,
    vinyals_split,
)
from mamlbook.data.omniglot import decode


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="module")
def small1(cache):
    return read_omniglot(SMALL1, cache_dir=cache)


@pytest.fixture(scope="module")
def small2(cache):
    return read_omniglot(SMALL2, cache_dir=cache)


@pytest.fixture(scope="module")
def splits(cache, small1, small2):                       # small1/small2 first: fills the cache
    return omniglot_splits("small", SMALL1.parent, cache_dir=cache)


@needs_omniglot
def test_small1_has_136_characters_of_20_drawings(small1):
    assert small1.images.shape == (136, 20, 28, 28, 1) and small1.counts.tolist() == [20] * 136
    assert not small1.fake


@needs_omniglot
def test_small2_has_156_characters_of_20_drawings(small2):
    assert small2.images.shape == (156, 20, 28, 28, 1) and small2.counts.tolist() == [20] * 156


@needs_omniglot
def test_classes_are_sorted_by_alphabet_then_character(small1):
    assert small1.class_names == sorted(small1.class_names)
    assert small1.class_names[0] == "Balinese/character01" and small1.class_names[-1] == "Latin/character26"


@needs_omniglot
def test_strokes_are_bright_after_inversion(small1):
    x = small1.images.float() / 255
    assert x.mean() < 0.5 and x.max() == 1.0
    assert (x[:, :, 0, 0] == 0).all()                   # the corner is background in every drawing


@needs_omniglot
def test_image_matches_an_independent_decode_of_the_png(small1):
    with zipfile.ZipFile(SMALL1) as zf:
        png = zf.read("images_background_small1/Greek/character03/0396_07.png")
    ref = 255 - np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((28, 28), Image.LANCZOS))
    c = small1.class_names.index("Greek/character03")
    assert np.array_equal(small1.images[c, 6, :, :, 0].numpy(), ref)
    assert small1.meta["char_ids"][c] == 396


@needs_omniglot
def test_maml_original_resize_is_binary_because_pillow_resizes_1bit_with_nearest():
    with zipfile.ZipFile(SMALL1) as zf:
        png = zf.read("images_background_small1/Greek/character03/0396_07.png")
    assert set(np.unique(decode(png, resize="maml-original")).tolist()) == {0, 255}
    assert len(np.unique(decode(png, resize="lanczos"))) > 2


@needs_omniglot
def test_second_read_comes_from_the_cache_and_is_identical(small1, cache):
    assert (cache / "omniglot-images_background_small1-28px-lanczos.npz").is_file()
    again = read_omniglot(SMALL1, cache_dir=cache)
    assert torch.equal(again.images, small1.images) and again.class_names == small1.class_names


@needs_omniglot
def test_extracted_folder_reads_like_the_zip(small1, tmp_path):
    with zipfile.ZipFile(SMALL1) as zf:
        zf.extractall(tmp_path / "omniglot-py")
    folder = read_omniglot(tmp_path / "omniglot-py" / "images_background_small1", cache=False)
    assert torch.equal(folder.images, small1.images) and folder.class_names == small1.class_names


@needs_omniglot
def test_small_split_sizes(splits):
    assert set(splits) == {"train", "test"}
    assert splits["train"].num_classes == 136 * 4      # rotations are classes
    assert splits["test"].num_classes == 106 * 4       # katakana 47 + Sanskrit 42 + Tagalog 17
    assert {n.split("/")[0] for n in splits["test"].class_names} == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}


@needs_omniglot
def test_small_splits_are_class_disjoint_by_global_character_id(splits, small1, small2):
    check_disjoint(splits)
    test_ids = {small2.meta["char_ids"][small2.class_names.index(n.split("@")[0])]
                for n in splits["test"].class_names}
    assert not test_ids & set(small1.meta["char_ids"])


@needs_omniglot
def test_greek_is_identical_in_both_small_sets(small1, small2):
    c1, c2 = small1.class_names.index("Greek/character01"), small2.class_names.index("Greek/character01")
    assert torch.equal(small1.images[c1], small2.images[c2])


@needs_omniglot
def test_episodes_repeat_for_a_seed_and_differ_for_another(splits):
    sampler = EpisodeSampler(splits["train"], n_way=5, k_shot=1, k_query=5)
    a, b = (sampler.sample(32, torch.Generator().manual_seed(7)) for _ in range(2))
    c = sampler.sample(32, torch.Generator().manual_seed(8))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.x_query, b.x_query)
    assert not torch.equal(a.x_support, c.x_support)
    assert a.y_support[0].tolist() == [0, 1, 2, 3, 4]
    assert sorted(set(a.y_query.flatten().tolist())) == [0, 1, 2, 3, 4]


# The split rules need the full sets (not here), so they are tested on the character names.
EVALUATION = {  # the 20 evaluation alphabets and their character counts (659 in all)
    "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26,
    "Ge_ez": 26, "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47,
    "Manipuri": 40, "Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46, "Sylheti": 28,
    "Syriac_(Serto)": 23, "Tengwar": 25, "Tibetan": 42, "ULOG": 26}
VAL_ALPHABETS = {"Armenian": 41, "Bengali": 46, "Early_Aramaic": 22, "Hebrew": 22, "Mkhedruli_(Georgian)": 41}


def names(alphabets):
    return [f"{a}/character{i:02d}" for a, n in alphabets.items() for i in range(1, n + 1)]


def background_names():
    """The 5 validation alphabets (172) plus stand-in names for the other 792 background characters."""
    return names(VAL_ALPHABETS) + names({f"Bg{i:02d}": 33 for i in range(24)})


def test_vinyals_split_is_1028_172_423():
    bg, ev = background_names(), names(EVALUATION)
    split = vinyals_split(bg, ev)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1028, 172, 423]


def test_vinyals_test_characters_are_the_published_ones():
    """The published list (torchmeta's assets/omniglot/test.json): Gurmukhi 42-45, then whole alphabets."""
    bg, ev = background_names(), names(EVALUATION)
    all_names = sorted(bg) + sorted(ev)
    test = [all_names[i] for i in vinyals_split(bg, ev)["test"]]
    later = ["Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
             "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG"]
    expected = [f"Gurmukhi/character{i}" for i in (42, 43, 44, 45)] + names({a: EVALUATION[a] for a in later})
    assert sorted(test) == sorted(expected)


def test_vinyals_split_refuses_the_small_sets():
    with pytest.raises(ValueError, match="needs the full Omniglot sets"):
        vinyals_split(names({"Greek": 24}), names({"Tagalog": 17}))


def test_maml_split_is_1100_100_423_disjoint_and_fixed_by_its_seed():
    all_names = background_names() + names(EVALUATION)
    a, b = maml_split(all_names), maml_split(list(reversed(all_names)))
    assert [len(a[k]) for k in ("train", "val", "test")] == [1100, 100, 423]
    assert len(set(a["train"]) | set(a["val"]) | set(a["test"])) == 1623
    # the split depends on the names, not on the order they were listed in
    rev = list(reversed(all_names))
    assert [all_names[i] for i in a["test"]] == [rev[i] for i in b["test"]]
    assert a["test"] != maml_split(all_names, seed=2)["test"]


def test_full_presets_run_end_to_end_on_fake_full_sets_in_torchvision_layout(tmp_path):
    """Fake background/evaluation zips (2 drawers each, to stay fast) where torchvision puts the real ones."""
    from mamlbook.data import make_fake_omniglot
    background = {**VAL_ALPHABETS, **{f"Bg{i:02d}": 33 for i in range(24)}}
    make_fake_omniglot(tmp_path / "omniglot-py" / "images_background.zip", alphabets=background, drawers=2)
    make_fake_omniglot(tmp_path / "omniglot-py" / "images_evaluation.zip", alphabets=EVALUATION, drawers=2)
    for preset, sizes in (("vinyals", (1028, 172, 423)), ("maml", (1100, 100, 423))):
        splits = omniglot_splits(preset, tmp_path, cache_dir=tmp_path / "cache")
        assert tuple(splits[k].num_classes for k in ("train", "val", "test")) == tuple(4 * n for n in sizes)
        assert all(s.fake and s.images.shape[1:] == (2, 28, 28, 1) for s in splits.values())
        check_disjoint(splits)
        if preset == "vinyals":
            alphabets = {k: {n.split("/")[0] for n in s.class_names} for k, s in splits.items()}
            assert alphabets["val"] == set(VAL_ALPHABETS) and alphabets["test"] <= set(EVALUATION)
