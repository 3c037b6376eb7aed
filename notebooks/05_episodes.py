# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 5 — Few-shot episodes: N-way K-shot tasks from Omniglot
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/05_episodes.ipynb)
#
# MAML learns from *tasks*, not from single examples. For classification a task is a tiny
# dataset: a few labelled pictures of a few classes to adapt on, and more pictures of the same
# classes to measure the adapted model. This chapter builds those tasks from real data.
#
# **What you will learn**
# - what an **N-way K-shot** task is, and the difference between its **support** and **query** sets;
# - why meta-train, meta-validation and meta-test must use **disjoint classes**;
# - how Omniglot is prepared the way MAML's code prepared it: inverted, 28×28, **rotations as new classes**;
# - how `mamlbook.data` samples a whole meta-batch of tasks at once, on the device that trains;
# - the correct facts about **mini-ImageNet**, the other benchmark of the paper.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
from mamlbook.config import banner

banner("Chapter 5");

# %% tags=["parameters"]
# Every knob of this chapter (papermill can override them).
from mamlbook.config import pick

seed = 0            # one seed for every random draw below
n_way = 5           # N: classes per task
k_shot = 1          # K: labelled support examples per class
k_query = 5         # Q: query examples per class
num_tasks = 32      # T: tasks per meta-batch (MAML's Omniglot meta-batch size)
timing_repeats = pick(200, 20)   # calls timed when we measure the sampler's speed

# %%
import math
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from mamlbook.config import fast_mode, seed_everything
from mamlbook.data import (EpisodeSampler, check_disjoint, find_omniglot_small, load_miniimagenet,
                           make_fake_miniimagenet, omniglot_splits, read_omniglot)

generator = seed_everything(seed)

# %% [markdown]
# ## 1. What a task is
#
# A **task** $\mathcal{T}_i$ in N-way K-shot classification is drawn in three steps:
#
# 1. pick $N$ classes at random from the classes available for training;
# 2. give them the labels $0, 1, \dots, N-1$ in a random order (a fresh order for every task);
# 3. take $K + Q$ different images of each class: $K$ go to the **support set**
#    $\mathcal{D}^{\text{tr}}_i$ ($N K$ labelled images, what the model adapts on in the inner loop),
#    and $Q$ to the **query set** $\mathcal{D}^{\text{ts}}_i$ ($N Q$ images, where the adapted model
#    is scored; the outer loop differentiates this score).
#
# Because the labels are shuffled in every task, no network can simply memorise "this character is
# label 3": label 3 means something different in every task. The only thing worth learning is how to
# learn quickly from $K$ examples. That is exactly what MAML's initialisation is meant to encode.
#
# The paper's Omniglot experiments use 5-way and 20-way tasks with $K = 1$ or $5$; mini-ImageNet uses
# 5-way with $K = 1$ or $5$.

# %% [markdown]
# ## 2. The data: Omniglot
#
# Omniglot (Lake et al., 2015) has 1,623 handwritten characters from 50 alphabets, each drawn once by
# 20 different people: few images per class and many classes, the opposite of MNIST. Its authors
# publish a *background* set (964 characters) and an *evaluation* set (659), and two small background
# sets (`images_background_small1.zip`, 136 characters; `..._small2.zip`, 156 characters) that this
# chapter uses because they are small enough for any laptop.
#
# `find_omniglot_small` looks for the two zips in `$MAMLBOOK_DATA`, the repository's `data/omniglot/`
# and `../shared/data/omniglot/`; otherwise it downloads them from the official repository (checking
# their SHA-256); and only if that fails it writes a generated stand-in, which everything below labels
# **FAKE**.

# %%
small1_path, small2_path, origin = find_omniglot_small()
FAKE = origin == "FAKE"
tag = "FAKE stand-in data — not Omniglot. " if FAKE else ""
print(f"Omniglot small sets ({origin}):\n  {small1_path}\n  {small2_path}")

# %%
small1 = read_omniglot(small1_path)
small2 = read_omniglot(small2_path)
print(small1.name, tuple(small1.images.shape), "(characters, drawings, H, W, channels), uint8")
print(small2.name, tuple(small2.images.shape))
if not FAKE:
    assert small1.images.shape == (136, 20, 28, 28, 1) and small2.images.shape == (156, 20, 28, 28, 1)

# %% [markdown]
# Each 105×105 black-on-white drawing was **inverted** (strokes are bright, value 1.0 after scaling;
# paper is 0) and **resized to 28×28**, as MAML's code did. Inverting makes most inputs zero, which
# suits a network whose first layer sums pixels. The classes are **sorted** by name
# (`Alphabet/characterNN`): `torchvision.datasets.Omniglot` and `os.listdir` list folders in
# file-system order, which differs between machines, and any split made from that order differs too.

# %%
pixels = small1.images.float() / 255
print(f"mean pixel {pixels.mean():.3f}, max {pixels.max():.1f}, corner pixel always {pixels[:, :, 0, 0].max():.1f}")
assert pixels.mean() < 0.5 and pixels.max() == 1.0     # bright strokes on a dark background
assert small1.class_names == sorted(small1.class_names)

# %%
fig, axes = plt.subplots(2, 10, figsize=(12, 2.8))
for ax, c in zip(axes.flat, range(0, small1.num_classes, small1.num_classes // 20)):
    ax.imshow(small1.images[c, 0, :, :, 0], cmap="gray")
    ax.set_title(small1.class_names[c].replace("/character", "\n#"), fontsize=7)
    ax.axis("off")
fig.suptitle(f"{tag}One drawing of twenty characters of {small1.name} (28×28, inverted)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. One task, written out in full
#
# Here is the whole recipe of section 1 for a single task, in plain PyTorch. The rest of the book
# uses the tested `EpisodeSampler` instead, which does the same for many tasks at once.

# %%
def sample_one_task(images, n_way, k_shot, k_query, generator):
    """images: (classes, per_class, H, W, C) uint8 → support/query tensors and labels of one task."""
    classes = torch.randperm(images.shape[0], generator=generator)[:n_way]   # step 1 (and 2: the order)
    support, query = [], []
    for label, c in enumerate(classes):
        picks = torch.randperm(images.shape[1], generator=generator)[:k_shot + k_query]  # step 3
        support.append(images[c, picks[:k_shot]])
        query.append(images[c, picks[k_shot:]])
    to_float = lambda xs: torch.cat(xs).permute(0, 3, 1, 2).float() / 255            # (M, C, H, W)
    y_support = torch.arange(n_way).repeat_interleave(k_shot)
    y_query = torch.arange(n_way).repeat_interleave(k_query)
    return to_float(support), y_support, to_float(query), y_query, classes


x_s, y_s, x_q, y_q, classes = sample_one_task(small1.images, n_way, k_shot, k_query, generator)
print("support", tuple(x_s.shape), y_s.tolist())
print("query  ", tuple(x_q.shape), y_q.tolist())
print("classes behind labels 0..N-1:", [small1.class_names[c] for c in classes])
assert x_s.shape == (n_way * k_shot, 1, 28, 28) and x_q.shape == (n_way * k_query, 1, 28, 28)

# %% [markdown]
# ## 4. Meta-train, meta-validation and meta-test classes
#
# MAML is judged on how well it learns **new** classes from $K$ examples, so the classes of the test
# tasks must never appear during meta-training; the meta-validation classes (for choosing
# hyperparameters and checkpoints) are a third, disjoint group. The splits are over *characters*:
# a character and its rotations always stay in the same split.
#
# | preset | meta-train | meta-val | meta-test | where from |
# |---|---:|---:|---:|---|
# | `"vinyals"` | 1028 | 172 | 423 | Vinyals et al. 2016; validation alphabets of Ravi & Larochelle / Snell et al. |
# | `"maml"` | 1100 | 100 | 423 | cbfinn/maml: all characters shuffled with `random.seed(1)` |
# | `"small"` | 136 (small1) | — | 106 (small2's katakana, Sanskrit, Tagalog) | this book, for laptops and CI |
# | chapter 6, fast mode | 114 (small1 without Early_Aramaic) | 22 (Early_Aramaic) | 106 | `mamlbook.fewshot` |
#
# The full presets need the full sets (`mamlbook.data.download_omniglot_full()`, through torchvision).
# For the small sets, Greek and Latin appear in *both* zips, so they cannot be test classes: the test
# split keeps only small2's three alphabets that small1 lacks. The original MAML code shuffled
# `os.listdir` order, so its exact characters cannot be reproduced; our `"maml"` preset shuffles the
# sorted list, which gives the same split on every machine. The `"small"` preset itself has no
# meta-val split; when chapter 6 trains on it, it holds small1's Early_Aramaic alphabet (one of
# Vinyals' validation alphabets) out of meta-training and meta-validates on it — the last row.

# %%
splits = omniglot_splits("small", small1_path.parent, rotations=(0,))
for name, split in splits.items():
    alphabets = sorted({n.split("/")[0] for n in split.class_names})
    print(f"{name:5s}: {split.num_classes:3d} characters from {alphabets}")
check_disjoint(splits)                      # raises if any character is in two splits
if not FAKE:
    assert splits["train"].num_classes == 136 and splits["test"].num_classes == 106
num_aramaic = sum(n.split("/")[0] == "Early_Aramaic" for n in splits["train"].class_names)
print(f"chapter 6 in fast mode: meta-train {splits['train'].num_classes - num_aramaic}, "
      f"meta-val {num_aramaic} (Early_Aramaic), meta-test {splits['test'].num_classes}")
if not FAKE:
    assert num_aramaic == 22

# %% [markdown]
# ## 5. Rotations as new classes
#
# Santoro et al. (2016) and MAML augment Omniglot by rotating every character by 90°, 180° and 270°
# and calling each rotation a **new class**: a "5" on its side is treated as a different character.
# This multiplies the classes by four (136 → 544 in small1). `with_rotations` does it once, on the
# uint8 images, so sampling stays a pure indexing operation.

# %%
splits = omniglot_splits("small", small1_path.parent)            # rotations (0, 90, 180, 270) by default
train, test = splits["train"], splits["test"]
print(f"meta-train classes: {train.num_classes}, meta-test classes: {test.num_classes}")
fig, axes = plt.subplots(1, 4, figsize=(6, 1.8))
for r, ax in enumerate(axes):
    ax.imshow(train.images[4 * 10 + r, 0, :, :, 0], cmap="gray")
    ax.set_title(train.class_names[4 * 10 + r].split("/")[1], fontsize=8)
    ax.axis("off")
fig.suptitle(f"{tag}One character, four classes")
plt.tight_layout()
plt.show()
assert torch.equal(train.images[4 * 10 + 1], torch.rot90(train.images[4 * 10], 1, dims=(1, 2)))

# %% [markdown]
# ## 6. A whole meta-batch at once
#
# `EpisodeSampler` holds the split once as a uint8 tensor on the training device (CPU here, the GPU
# when there is one) and draws all $T$ tasks with a few index operations: random keys and `topk`
# choose $N$ distinct classes per task and $K+Q$ distinct images per class; one `index_select`
# gathers them; the conversion to float in $[0, 1]$ happens on the device. No DataLoader workers and
# no image decoding per episode. Shapes: support $(T, NK, C, H, W)$, query $(T, NQ, C, H, W)$,
# labels $(T, NK)$ and $(T, NQ)$.

# %%
sampler = EpisodeSampler(train, n_way=n_way, k_shot=k_shot, k_query=k_query)
episodes = sampler.sample(num_tasks, generator)
print("x_support", tuple(episodes.x_support.shape), episodes.x_support.dtype)
print("y_support", tuple(episodes.y_support.shape), episodes.y_support[0].tolist())
print("x_query  ", tuple(episodes.x_query.shape))
assert episodes.x_support.shape == (num_tasks, n_way * k_shot, 1, 28, 28)
assert episodes.x_query.shape == (num_tasks, n_way * k_query, 1, 28, 28)
assert episodes.y_query.min() == 0 and episodes.y_query.max() == n_way - 1

# %%
def show_task(episodes, t, names, title):
    """Support images in the top row (one column per label), query images below."""
    x_s, y_s, x_q, y_q = episodes.task(t)
    rows = 1 + (len(y_q) // len(y_s.unique()))
    fig, axes = plt.subplots(rows, n_way, figsize=(1.6 * n_way, 1.5 * rows), squeeze=False)
    for label in range(n_way):
        axes[0, label].imshow(x_s[y_s == label][0, 0], cmap="gray")
        alphabet, rotation = names[t][label].split("/")[0][:13], names[t][label].split("@rot")[-1]
        axes[0, label].set_title(f"label {label}\n{alphabet} {rotation}°", fontsize=7)
        for r, img in enumerate(x_q[y_q == label]):
            axes[1 + r, label].imshow(img[0], cmap="gray")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("support", fontsize=8)
    axes[1, 0].set_ylabel("query", fontsize=8)
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


names = sampler.class_names(episodes.classes)
for t in range(2):
    show_task(episodes, t, names, f"{tag}Meta-train task {t}: {n_way}-way {k_shot}-shot, {k_query} queries per class")


# %% [markdown]
# **One difference from the official sampler.** `EpisodeSampler` draws $N$ classes from the pool of
# rotated classes, so a task can hold **one character twice**, under two rotations (a "5" upright
# and the same "5" on its side, as two labels). The official code (cbfinn/maml,
# `data_generator.py`) draws $N$ distinct *characters* and then gives each a random rotation
# (`rotations = tf.multinomial(...)`, one per class), so its tasks never do. How often it happens
# here: the $i$-th class drawn must avoid the $3i$ other rotations of the characters already drawn,
# so a task is free of repeats with probability $\prod_{i<N} \frac{4C - 4i}{4C - i}$ for $C$
# characters. The cell checks that against the sampler:

# %%
def p_repeated_character(num_characters, n_way, rotations=4):
    """P(an n_way task drawn from the pool of rotated classes holds some character twice)."""
    pool = rotations * num_characters
    return 1 - math.prod((pool - rotations * i) / (pool - i) for i in range(n_way))


num_characters = train.num_classes // 4
drawn, _ = sampler.sample_indices(2000, torch.Generator().manual_seed(seed))   # (2000, N) classes
repeats = sum(len({train.class_names[c].split("@rot")[0] for c in task}) < n_way for task in drawn.tolist())
expected = p_repeated_character(num_characters, n_way)
print(f"{n_way}-way tasks with a repeated character: {repeats / 2000:.1%} of 2000 sampled, "
      f"{expected:.1%} expected ({num_characters} characters)")
for c, n in ((1100, 5), (1100, 20)):
    print(f"  with MAML's {c} meta-train characters, {n}-way: {p_repeated_character(c, n):.1%}")
assert abs(repeats / 2000 - expected) < 0.03          # about 5 binomial standard deviations

# %% [markdown]
# The book keeps the rotated-pool sampling. Keep the difference in mind when you compare with the
# official code: two rotations of a symmetric character can look alike, which makes such a task
# harder. The same class gets a different label in another task, and a meta-test
# task draws only from the meta-test alphabets:

# %%
test_sampler = EpisodeSampler(test, n_way=n_way, k_shot=k_shot, k_query=k_query)
test_episodes = test_sampler.sample(num_tasks, generator)
show_task(test_episodes, 0, test_sampler.class_names(test_episodes.classes),
          f"{tag}Meta-test task: classes never seen in meta-training")

# %% [markdown]
# ## 7. Reproducible, and fast
#
# A seeded `torch.Generator` fixes every draw: the same seed gives the same meta-batch, another seed a
# different one. And because sampling is indexing, a meta-batch is cheap: no PNG is decoded and no
# Python loop runs per task or per image. How cheap depends on the machine, so the cell below measures
# it now, on whatever machine runs this notebook, beside $T$ calls of section 3's one-task loop (a busy
# machine, or one where PyTorch's threads compete with other programs, can be much slower).
# `python -m mamlbook.measure.episode_sampling` measures it more carefully against the per-task Python
# loop that many ports use, and `docs/data.md` has its table.

# %%
a = sampler.sample(num_tasks, torch.Generator().manual_seed(123))
b = sampler.sample(num_tasks, torch.Generator().manual_seed(123))
c = sampler.sample(num_tasks, torch.Generator().manual_seed(124))
assert torch.equal(a.x_support, b.x_support) and torch.equal(a.x_query, b.x_query)
assert not torch.equal(a.x_support, c.x_support)


# %%
from mamlbook.measure.episode_sampling import time_calls


def median_ms(draw_meta_batch):
    """Median wall time of ``timing_repeats`` calls (after 3 untimed ones), in milliseconds."""
    wall, _ = time_calls(draw_meta_batch, timing_repeats, torch.device("cpu"), warmup=3)
    return 1e3 * float(np.median(wall))


timing_generator = torch.Generator().manual_seed(seed)       # its own draws: the timing changes no later task
indexed = median_ms(lambda: sampler.sample(num_tasks, timing_generator))
looped = median_ms(lambda: [sample_one_task(train.images, n_way, k_shot, k_query, timing_generator)
                            for _ in range(num_tasks)])
print(("FAST MODE, a shortened measurement: " if fast_mode() else "")
      + f"one meta-batch of {num_tasks} {n_way}-way {k_shot}-shot tasks took {indexed:.2f} ms with `EpisodeSampler` "
      f"and {looped:.2f} ms as {num_tasks} calls of section 3's one-task loop ({looped / indexed:.1f}× as long), "
      f"medians of {timing_repeats} calls each, measured just now on this machine.")

# %% [markdown]
# ## 8. mini-ImageNet
#
# The paper's second benchmark, mini-ImageNet (Vinyals et al., 2016), is **100 ImageNet classes with
# 600 colour images each, at 84×84 pixels**, split by **Ravi & Larochelle (2017) into 64 meta-train,
# 16 meta-validation and 20 meta-test classes** (38,400 / 9,600 / 12,000 images). A widely read
# introduction describes it as "600 classes with 100/20/20": that is wrong. MAML's 5-way results on
# it use these splits.
#
# The images come from ImageNet, so there is no stable public download with a checksum.
# `mamlbook.data.load_miniimagenet` reads the three common distributions: an `images/` folder with the
# Ravi & Larochelle CSVs (`filename,label`), class folders `train|val|test/<wnid>/*.jpg`, and
# learn2learn's pickles (read with an allow-list, since a pickle can run code). Images that are not
# 84×84 are resized with PIL's LANCZOS filter, as the original preprocessing did. The first read writes
# a uint8 cache `(N, 84, 84, 3)` that loads in seconds. `docs/data.md` says which files to get and
# where to put them.
#
# No mini-ImageNet images exist on the machines that build this book, so here is the loader running on
# a **FAKE** stand-in in the real format: real class ids and file names, generated pictures.

# %%
fake_root = tempfile.mkdtemp(prefix="fake-miniimagenet-")
make_fake_miniimagenet(fake_root, "csv", classes_per_split=(5, 2, 2), images_per_class=8)
fake_train = load_miniimagenet(fake_root, "train", progress=False)
fake_episodes = EpisodeSampler(fake_train, n_way=5, k_shot=1, k_query=1).sample(1, generator)
assert fake_train.fake and fake_episodes.x_support.shape == (1, 5, 3, 84, 84)
fig, axes = plt.subplots(1, 5, figsize=(9, 2.2))
for label, ax in enumerate(axes):
    ax.imshow(fake_episodes.x_support[0, label].permute(1, 2, 0))
    ax.set_title(fake_train.class_names[fake_episodes.classes[0, label]], fontsize=8)
    ax.axis("off")
fig.suptitle("FAKE mini-ImageNet stand-in (generated pictures): one 5-way 1-shot support set")
plt.tight_layout()
plt.show()
shutil.rmtree(fake_root)                     # the split is in memory now; the stand-in files can go

# %% [markdown]
# ## Summary
#
# - An **N-way K-shot task** is $N$ random classes with labels shuffled to $0..N-1$, a **support set**
#   of $NK$ labelled images to adapt on and a **query set** of $NQ$ images to score the adapted model.
# - Meta-train, meta-val and meta-test use **disjoint classes**; for Omniglot the presets are Vinyals'
#   1028/172/423, MAML's 1100/100/423 (seeded) and this book's small split (136 / 106 characters;
#   chapter 6 validates on small1's Early_Aramaic, leaving 114 for meta-training).
# - Omniglot is **inverted** (bright strokes), **28×28**, **sorted** by class name, and each
#   **rotation** of a character is a class of its own.
# - `EpisodeSampler` keeps a split as one uint8 tensor on the device and draws whole meta-batches
#   by indexing: reproducible with a seed, and fast.
# - **mini-ImageNet** is 100 classes × 600 images at 84×84, split **64/16/20**.
#
# Next chapter: MAML on these episodes.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 — a baseline that learns nothing.** Write `nearest_neighbour_accuracy(episodes)`: for
# every query image, predict the label of the support image closest to it in raw pixel space
# (Euclidean distance), and return the accuracy over all tasks of the meta-batch. Any meta-learner
# must beat this number.

# %%
def nearest_neighbour_accuracy(episodes):
    """Fraction of query images whose nearest support image (raw pixels) has the same label."""
    ### BEGIN SOLUTION
    x_s = episodes.x_support.flatten(2)                      # (T, N·K, D)
    x_q = episodes.x_query.flatten(2)                        # (T, N·Q, D)
    nearest = torch.cdist(x_q, x_s).argmin(dim=-1)           # (T, N·Q): index of the closest support image
    predicted = torch.gather(episodes.y_support, 1, nearest)
    return (predicted == episodes.y_query).float().mean().item()
    ### END SOLUTION


# %%
nn_acc = nearest_neighbour_accuracy(test_episodes)
print(f"{tag}1-nearest-neighbour accuracy on {num_tasks} meta-test tasks ({n_way}-way {k_shot}-shot): {nn_acc:.3f}")
assert 0.0 <= nn_acc <= 1.0
assert nn_acc > 1.0 / n_way                 # better than guessing: pixels carry some class information
perfect = EpisodeSampler(test, n_way=n_way, k_shot=1, k_query=1).sample(4, generator)
perfect.x_query = perfect.x_support.clone()  # each query IS its support image: accuracy must be 1
assert nearest_neighbour_accuracy(perfect) == 1.0

# %% [markdown]
# **Exercise 2 — how many tasks are there?** Write `count_task_sets(num_characters)`: the number of
# different *sets* of 5 classes a 5-way task can use when each of `num_characters` characters comes
# in four rotations, and how many times more that is than without rotations. (Hint: `math.comb`.)

# %%
def count_task_sets(num_characters, n_way=5, rotations=4):
    """(number of n_way-class sets with the rotations as classes, how many times more than without)."""
    ### BEGIN SOLUTION
    with_rotations = math.comb(rotations * num_characters, n_way)
    return with_rotations, with_rotations / math.comb(num_characters, n_way)
    ### END SOLUTION


# %%
no_rotation = omniglot_splits("small", small1_path.parent, rotations=(0,))["train"].num_classes
num_task_sets, ratio = count_task_sets(no_rotation)
print(f"{num_task_sets:,} class sets; {ratio:.0f}× more than without rotations")
if not FAKE:
    assert num_task_sets == math.comb(544, 5)
assert num_task_sets == math.comb(train.num_classes, 5)
assert ratio >= 4 ** 5       # at least 4⁵: (4n − i) / (n − i) ≥ 4 for each of the 5 factors

# %% [markdown]
# **Exercise 3 — how many queries fit?** Every Omniglot character has 20 drawings, and a task needs
# $K + Q$ *different* drawings per class. Write `max_queries(k_shot)`, the largest $Q$ allowed, and
# check that `EpisodeSampler` accepts it and refuses one more with a `ValueError`.

# %%
def max_queries(k_shot, drawings_per_class=20):
    ### BEGIN SOLUTION
    return drawings_per_class - k_shot
    ### END SOLUTION


# %%
for k in (1, 5):
    EpisodeSampler(train, n_way=n_way, k_shot=k, k_query=max_queries(k))     # accepted
    try:
        EpisodeSampler(train, n_way=n_way, k_shot=k, k_query=max_queries(k) + 1)
        raise AssertionError("one query too many was accepted")
    except ValueError as err:
        print(f"K={k}, Q={max_queries(k) + 1}: refused: {str(err)[:70]}...")
assert max_queries(1) == 19 and max_queries(5) == 15
