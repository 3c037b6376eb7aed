"""The generated stand-ins: real formats, marked FAKE, learnable classes; and where data is looked for."""
import zipfile

import torch

from mamlbook.data import (
    EpisodeSampler,
    find_data,
    load_miniimagenet,
    make_fake_miniimagenet,
    make_fake_omniglot,
    omniglot_splits,
    read_omniglot,
)


def nearest_neighbour_accuracy(episodes):
    """1-NN on raw pixels: a classifier that learns nothing, so accuracy above chance means separable classes."""
    xs, xq = episodes.x_support.flatten(2), episodes.x_query.flatten(2)          # (T, N·K, D), (T, N·Q, D)
    nearest = torch.cdist(xq, xs).argmin(-1)                                    # (T, N·Q)
    pred = torch.gather(episodes.y_support, 1, nearest)
    return (pred == episodes.y_query).float().mean().item()


def test_fake_omniglot_zip_has_the_real_layout_and_marker(tmp_path):
    path = make_fake_omniglot(tmp_path / "images_background_small1.zip", characters_per_alphabet=3)
    with zipfile.ZipFile(path) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert "images_background_small1/FAKE_DATASET.txt" in zf.namelist()
    assert len(pngs) == 5 * 3 * 20
    assert pngs[0].startswith("images_background_small1/Balinese/character01/") and pngs[0].endswith("_01.png")


def test_fake_omniglot_runs_through_the_real_loader_and_split_preset(tmp_path):
    for n in (1, 2):
        make_fake_omniglot(tmp_path / f"images_background_small{n}.zip", small=n, characters_per_alphabet=4)
    one = read_omniglot(tmp_path / "images_background_small1.zip", cache=False)
    assert one.fake and one.name == "FAKE omniglot/images_background_small1"
    assert one.images.shape == (20, 20, 28, 28, 1)
    splits = omniglot_splits("small", tmp_path, cache=False)
    assert splits["train"].num_classes == 20 * 4 and splits["test"].num_classes == 12 * 4
    assert all(s.fake for s in splits.values())


def test_fake_omniglot_classes_are_learnable(tmp_path):
    make_fake_omniglot(tmp_path / "images_background_small1.zip", characters_per_alphabet=4)
    split = read_omniglot(tmp_path / "images_background_small1.zip", cache=False)
    e = EpisodeSampler(split, 5, 1, 5).sample(50, torch.Generator().manual_seed(0))
    assert nearest_neighbour_accuracy(e) > 0.6                               # chance is 0.2


def test_fake_miniimagenet_classes_are_learnable(tmp_path):
    make_fake_miniimagenet(tmp_path, "pickle", classes_per_split=(8, 1, 1), images_per_class=10, csv_dir=None)
    split = load_miniimagenet(tmp_path, "train", progress=False)
    e = EpisodeSampler(split, 5, 1, 5).sample(50, torch.Generator().manual_seed(0))
    assert nearest_neighbour_accuracy(e) > 0.6


def test_mamlbook_data_env_var_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "x.zip").write_bytes(b"")
    monkeypatch.setenv("MAMLBOOK_DATA", str(tmp_path))
    assert find_data("omniglot/x.zip") == tmp_path
    assert find_data("omniglot/not-there.zip") is None


def test_without_real_omniglot_the_fallback_is_the_labelled_fake(tmp_path, monkeypatch, capsys):
    import mamlbook.data.paths as paths
    from mamlbook.data import find_omniglot_small
    monkeypatch.setattr(paths, "data_roots", lambda: [])
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path))
    small1, small2, origin = find_omniglot_small(download=False)
    assert origin == "FAKE" and small1.is_file() and small2.is_file()
    assert "FAKE DATA: Omniglot was not found" in capsys.readouterr().out
    assert read_omniglot(small1, cache=False).fake
