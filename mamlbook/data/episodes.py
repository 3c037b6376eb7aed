"""N-way K-shot episodes, sampled as whole meta-batches from a device-resident image set.

The tested copy of chapter 5's episode sampler.

A split (:class:`ClassImages`) is one uint8 tensor on the target device; :class:`EpisodeSampler`
gathers T tasks from it by index arithmetic alone (no DataLoader, no per-episode decoding). Label j
is the task's j-th drawn class, so a class gets different labels in different tasks. Shapes and
timings: docs/data.md, section "Episodes and their speed".
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Sequence

import numpy as np
import torch

from ..errors import BadFileError, OptionError
from ..tasks import MetaBatch

__all__ = ["ROT_SEP", "ClassImages", "base_class", "check_disjoint", "Episodes", "EpisodeSampler"]

ROT_SEP = "@rot"   # class name suffix of a rotated copy: "Greek/character03@rot90"


@dataclass
class ClassImages:
    """The images of one split, grouped by class.

    Attributes:
        images: (num_classes, per_class, H, W, C) uint8. Classes with fewer images than
            ``per_class`` are padded at the end; ``counts`` says how many are real.
        counts: (num_classes,) int64, images present in each class.
        class_names: one name per class (a wnid, or ``Alphabet/characterNN[@rotD]``).
        name: what this split is, for messages and plots ("omniglot-small1/train").
        fake: True for generated stand-in data; every consumer should say so on screen.
    """

    images: torch.Tensor
    counts: torch.Tensor
    class_names: list[str]
    name: str = ""
    fake: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 5:
            raise ValueError("images must be a uint8 tensor (num_classes, per_class, H, W, C), "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.class_names) != self.images.shape[0] or len(self.counts) != len(self.class_names):
            raise ValueError(f"{len(self.class_names)} class names and {len(self.counts)} counts "
                             f"for {self.images.shape[0]} classes")

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as the sampler returns it."""
        _, _, h, w, c = self.images.shape
        return c, h, w

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return int(self.counts.sum())

    def to(self, device) -> "ClassImages":
        """The same split with its uint8 images on ``device`` (one copy, made once)."""
        return replace(self, images=self.images.to(device), counts=self.counts.to(device))

    @classmethod
    def from_flat(cls, images: np.ndarray | torch.Tensor, labels, class_names: Sequence[str],
                  **kwargs) -> "ClassImages":
        """Group flat images (N, H, W, C) uint8 with integer ``labels`` (N,) into classes.

        Images keep their order within each class. Uniform class sizes cost no copy.
        """
        images = torch.as_tensor(images)
        if images.dim() == 3:                                   # (N, H, W) greyscale
            images = images.unsqueeze(-1)
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        num_classes = len(class_names)
        counts = torch.bincount(labels, minlength=num_classes)
        if len(counts) != num_classes:
            raise ValueError(f"labels go up to {len(counts) - 1} but there are {num_classes} class names")
        order = torch.argsort(labels, stable=True)
        if not torch.equal(order, torch.arange(len(labels))):
            images = images[order]                                   # class-major order
        if counts.min() == counts.max():
            grouped = images.reshape(num_classes, int(counts[0]), *images.shape[1:])  # a view
        else:
            grouped = images.new_zeros((num_classes, int(counts.max()), *images.shape[1:]))
            by_class = labels[order]                           # then each image's position in its class
            within = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[by_class]
            grouped[by_class, within] = images
        return cls(grouped, counts, list(class_names), **kwargs)

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ClassImages":
        """The classes at ``indices`` (in that order) as a new split."""
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return replace(self, images=self.images[idx.to(self.device)], counts=self.counts[idx.to(self.device)],
                       class_names=[self.class_names[i] for i in idx.tolist()],
                       name=self.name if name is None else name)

    def with_rotations(self, degrees: Sequence[int] = (0, 90, 180, 270)) -> "ClassImages":
        """Each class once per rotation, as a new class (Santoro et al. 2016; MAML's Omniglot).

        Class ``c`` rotated by ``degrees[r]`` becomes class ``c * len(degrees) + r``, named
        ``<name>@rot<degrees>``. Rotation is counter-clockwise, done once here on the uint8 set.
        """
        degrees = list(degrees)
        if any(d % 90 for d in degrees) or len(set(d % 360 for d in degrees)) != len(degrees):
            raise OptionError(f"rotations must be distinct multiples of 90 degrees, got {degrees}")
        if degrees == [0]:
            return self
        _, _, h, w, _ = self.images.shape
        if h != w and any(d % 180 for d in degrees):
            raise OptionError(f"90-degree rotations need square images, got {h}x{w}")
        rotated = torch.stack([torch.rot90(self.images, k=(d // 90) % 4, dims=(2, 3))
                               for d in degrees], dim=1)        # (classes, R, per_class, H, W, C)
        names = [f"{n}{ROT_SEP}{d % 360}" for n in self.class_names for d in degrees]
        return replace(self, images=rotated.flatten(0, 1),
                       counts=self.counts.repeat_interleave(len(degrees)), class_names=names)


def base_class(name: str) -> str:
    """The class a (possibly rotated) class name comes from: "Greek/character03@rot90" → "Greek/character03".
    """
    return name.split(ROT_SEP)[0]


def check_disjoint(splits: dict[str, ClassImages]) -> None:
    """Raise BadFileError (a ValueError) if two splits share a class (rotated copies count as the same)."""
    names = {k: {base_class(n) for n in s.class_names} for k, s in splits.items()}
    for a, b in combinations(names, 2):
        shared = names[a] & names[b]
        if shared:
            raise BadFileError(f"splits {a!r} and {b!r} share {len(shared)} classes, e.g. "
                               f"{sorted(shared)[:3]}; meta-train/val/test must be class-disjoint: check "
                               "that each split's files are the published ones (see docs/data.md)")


@dataclass
class Episodes(MetaBatch):
    """A meta-batch of T N-way tasks.

    Shapes: ``x_support`` (T, N·K, C, H, W) float32, ``y_support`` (T, N·K) int64,
    ``x_query`` (T, N·Q, C, H, W), ``y_query`` (T, N·Q), ``classes`` (T, N): the split's
    class index behind label j of task t is ``classes[t, j]``. Support and query are
    grouped by label: the first K (or Q) examples have label 0, and so on.
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    classes: torch.Tensor


class EpisodeSampler:
    """Samples meta-batches of N-way K-shot tasks (Q queries per class) from one split.

    Args:
        split: the split's images (moved to ``device`` once, if given).
        n_way: N, classes per task.
        k_shot: K, support images per class.
        k_query: Q, query images per class (MAML's code: Q = K for Omniglot, Q = 15 when
            meta-training on mini-ImageNet).
        device: where the images live and episodes are built (default: the split's device).
        mean, std: optional per-channel normalisation applied after scaling to [0, 1].
    Raises:
        OptionError (a ValueError): N larger than the number of classes, or a class with fewer than
            K + Q images.
    """

    def __init__(self, split: ClassImages, n_way: int, k_shot: int, k_query: int, *,
                 device=None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        if n_way < 1 or k_shot < 1 or k_query < 0:
            raise OptionError(f"need n_way ≥ 1, k_shot ≥ 1, k_query ≥ 0; got {n_way}, {k_shot}, {k_query}")
        if n_way > split.num_classes:
            raise OptionError(f"{n_way}-way tasks need {n_way} classes but {split.name or 'the split'} "
                             f"has {split.num_classes}")
        need = k_shot + k_query
        short = [(n, int(c)) for n, c in zip(split.class_names, split.counts.tolist()) if c < need]
        if short:
            raise OptionError(f"{len(short)} classes of {split.name or 'the split'} have fewer than "
                             f"K + Q = {k_shot} + {k_query} = {need} images, e.g. {short[:3]} "
                             "(name, images). Lower k_shot/k_query or drop those classes.")
        self.split = split if device is None else split.to(device)
        self.n_way, self.k_shot, self.k_query = n_way, k_shot, k_query
        dev = self.split.device
        c, h, w = self.split.image_shape
        # one row per image: index_select on a 2-D uint8 tensor is the fastest gather
        self._flat = self.split.images.reshape(-1, h * w * c)                 # (classes·P, H·W·C)
        self._per_class = self.split.images.shape[1]
        self._uniform = bool(self.split.counts.min() == self._per_class)
        # positions ≥ count are padding: give them -1 so top-k never picks them
        self._pad = (torch.arange(self._per_class, device=dev)[None, :]
                     >= self.split.counts[:, None])                           # (classes, P)
        labels = torch.arange(n_way, device=dev)
        self._y_support = labels.repeat_interleave(k_shot)                    # (N·K,)
        self._y_query = labels.repeat_interleave(k_query)                     # (N·Q,)
        self._mean = None if mean is None else torch.tensor(mean, device=dev).view(1, 1, -1, 1, 1)
        self._std = None if std is None else torch.tensor(std, device=dev).view(1, 1, -1, 1, 1)

    def sample_indices(self, num_tasks: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(classes (T, N), image indices within each class (T, N, K+Q)), all distinct per task."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        dev = self.split.device
        n, s = self.n_way, self.k_shot + self.k_query
        keys = torch.rand(num_tasks, self.split.num_classes, generator=generator, device=gdev)
        classes = keys.topk(n, dim=1).indices.to(dev)                              # (T, N)
        keys = torch.rand(num_tasks, n, self._per_class, generator=generator, device=gdev).to(dev)
        if not self._uniform:
            keys = keys.masked_fill(self._pad[classes], -1.0)
        return classes, keys.topk(s, dim=2).indices                                # (T, N, K+Q)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> Episodes:
        """A meta-batch of ``num_tasks`` tasks (see :class:`Episodes` for the shapes)."""
        t, n, k, q = num_tasks, self.n_way, self.k_shot, self.k_query
        classes, within = self.sample_indices(t, generator)
        rows = (classes[:, :, None] * self._per_class + within).reshape(-1)          # (T·N·(K+Q),)
        c, h, w = self.split.image_shape
        x = self._flat.index_select(0, rows).view(t, n, k + q, h, w, c)            # uint8
        return Episodes(self._to_float(x[:, :, :k]), self._y_support.expand(t, -1).contiguous(),
                        self._to_float(x[:, :, k:]), self._y_query.expand(t, -1).contiguous(), classes)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, S, H, W, C) uint8 → (T, N·S, C, H, W) float32 in [0, 1] (then normalised)."""
        t, n, s, h, w, c = x.shape
        x = x.permute(0, 1, 2, 5, 3, 4).reshape(t, n * s, c, h, w)    # one uint8 copy, CHW order
        out = x.to(torch.float32).div_(255.0)                          # vectorised fast paths
        if self._mean is not None:
            out.sub_(self._mean)
        if self._std is not None:
            out.div_(self._std)
        return out

    def class_names(self, classes: torch.Tensor) -> list[list[str]]:
        """Names of the classes behind each task's labels, from :attr:`Episodes.classes`."""
        return [[self.split.class_names[c] for c in row] for row in classes.tolist()]
