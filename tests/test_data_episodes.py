"""EpisodeSampler on a hand-made split whose pixels spell out each image's class and index."""
import numpy as np
import pytest
import torch

from mamlbook.data import ClassImages, EpisodeSampler, check_disjoint


def labelled_split(num_classes=12, per_class=10, counts=None, channels=1):
    """Image i of class c has pixel (0, 0) = c and pixel (0, 1) = i; every other pixel is 0."""
    images = torch.zeros(num_classes, per_class, 4, 4, channels, dtype=torch.uint8)
    images[:, :, 0, 0, :] = torch.arange(num_classes, dtype=torch.uint8)[:, None, None]
    images[:, :, 0, 1, :] = torch.arange(per_class, dtype=torch.uint8)[None, :, None]
    counts = torch.full((num_classes,), per_class) if counts is None else torch.tensor(counts)
    return ClassImages(images, counts, [f"c{c:02d}" for c in range(num_classes)], name="toy")


def identities(x):
    """(…, C, H, W) floats in [0, 1] → the (class, index) written into each image's pixels."""
    px = (x[..., 0, 0, :2] * 255).round().long()        # (…, 2)
    return px[..., 0], px[..., 1]


def test_shapes_and_dtypes_of_a_meta_batch():
    e = EpisodeSampler(labelled_split(channels=3), n_way=5, k_shot=2, k_query=3).sample(7)
    assert e.x_support.shape == (7, 10, 3, 4, 4) and e.x_query.shape == (7, 15, 3, 4, 4)
    assert e.y_support.shape == (7, 10) and e.y_query.shape == (7, 15) and e.classes.shape == (7, 5)
    assert e.x_support.dtype == torch.float32 and e.y_support.dtype == torch.int64


def test_to_a_dtype_converts_the_images_and_keeps_labels_integer():
    e = EpisodeSampler(labelled_split(), n_way=5, k_shot=2, k_query=3).sample(2)
    d = e.to("cpu", torch.float64)
    assert d.x_support.dtype == d.x_query.dtype == torch.float64
    assert d.y_support.dtype == d.y_query.dtype == d.classes.dtype == torch.int64
    assert torch.equal(d.y_query, e.y_query) and torch.equal(d.x_support, e.x_support.double())


def test_labels_are_0_to_n_minus_1_grouped_by_class():
    e = EpisodeSampler(labelled_split(), n_way=5, k_shot=2, k_query=3).sample(4)
    assert e.y_support[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert e.y_query[3].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_every_image_belongs_to_the_class_behind_its_label():
    e = EpisodeSampler(labelled_split(), n_way=5, k_shot=2, k_query=3).sample(20, torch.Generator().manual_seed(1))
    for x, y in ((e.x_support, e.y_support), (e.x_query, e.y_query)):
        cls, _ = identities(x)
        assert torch.equal(cls, torch.gather(e.classes, 1, y))


def test_classes_within_a_task_are_distinct_and_images_never_repeat():
    e = EpisodeSampler(labelled_split(), n_way=6, k_shot=3, k_query=4).sample(50, torch.Generator().manual_seed(2))
    for t in range(50):
        assert len(set(e.classes[t].tolist())) == 6
        cls, idx = identities(torch.cat([e.x_support[t], e.x_query[t]]))
        pairs = set(zip(cls.tolist(), idx.tolist()))
        assert len(pairs) == 6 * (3 + 4)                # support and query never share an image


def test_same_seed_same_episodes_other_seed_different():
    s = EpisodeSampler(labelled_split(), n_way=5, k_shot=1, k_query=1)
    a, b = (s.sample(8, torch.Generator().manual_seed(0)) for _ in range(2))
    c = s.sample(8, torch.Generator().manual_seed(1))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.x_query, b.x_query)
    assert not torch.equal(a.classes, c.classes)


def test_every_class_gets_drawn():
    sampler = EpisodeSampler(labelled_split(), n_way=5, k_shot=1, k_query=1)
    e = sampler.sample(200, torch.Generator().manual_seed(0))
    assert sorted(set(e.classes.flatten().tolist())) == list(range(12))


def test_padding_of_short_classes_is_never_sampled():
    counts = [10] * 11 + [4]                           # the last class has 4 real images
    e = EpisodeSampler(labelled_split(counts=counts), n_way=12, k_shot=2, k_query=2).sample(
        100, torch.Generator().manual_seed(0))
    cls, idx = identities(torch.cat([e.x_support, e.x_query], 1))
    assert idx[cls == 11].max() <= 3
    assert set(idx[cls == 11].tolist()) == {0, 1, 2, 3}


def test_a_class_with_fewer_than_k_plus_q_images_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fewer than K \+ Q = 2 \+ 3 = 5 images, e\.g\. \[\('c11', 4\)\]"):
        EpisodeSampler(labelled_split(counts=[10] * 11 + [4]), n_way=5, k_shot=2, k_query=3)


def test_more_ways_than_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="20-way tasks need 20 classes but toy has 12"):
        EpisodeSampler(labelled_split(), n_way=20, k_shot=1, k_query=1)


def test_pixels_scale_to_unit_interval_then_normalise():
    split = labelled_split()
    raw = EpisodeSampler(split, 2, 1, 1).sample(3, torch.Generator().manual_seed(0)).x_support
    normalising = EpisodeSampler(split, 2, 1, 1, mean=[0.5], std=[0.25])
    norm = normalising.sample(3, torch.Generator().manual_seed(0)).x_support
    cls, _ = identities(raw)
    assert torch.equal(raw[..., 0, 0, 0], cls.float() / 255)
    assert torch.allclose(norm, (raw - 0.5) / 0.25)


def test_rotations_make_new_classes_of_rotated_images():
    split = labelled_split(num_classes=3, per_class=2)
    rot = split.with_rotations((0, 90, 180, 270))
    assert rot.num_classes == 12 and rot.class_names[:4] == ["c00@rot0", "c00@rot90", "c00@rot180", "c00@rot270"]
    img = split.images[1, 0, :, :, 0]                  # pixel (0,0) = 1 (class), (0,1) = 0
    assert torch.equal(rot.images[4 + 1, 0, :, :, 0], torch.from_numpy(np.rot90(img.numpy(), 1).copy()))
    assert torch.equal(rot.images[4 + 2, 0, :, :, 0], img.flip(0).flip(1))


def test_from_flat_groups_images_by_label_keeping_order():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 2, 2, 1)
    split = ClassImages.from_flat(images, [1, 0, 1, 0, 1, 0], ["a", "b"])
    assert split.images[:, :, 0, 0, 0].tolist() == [[1, 3, 5], [0, 2, 4]]


def test_check_disjoint_catches_a_shared_class_even_when_rotated():
    a = labelled_split(num_classes=3).with_rotations((0, 90))
    b = labelled_split(num_classes=2).subset([1])      # "c01", also in a as c01@rot0/90
    with pytest.raises(ValueError, match=r"share 1 classes, e\.g\. \['c01'\]"):
        check_disjoint({"train": a, "test": b})
