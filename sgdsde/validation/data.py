"""Image classification data for validation runs, all offline (no download at run time).

* ``load_digits``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), the
  default for examples and tests;
* ``load_cifar``: CIFAR-10/100 from the standard python-pickle batch files in a folder
  the user names (the "CIFAR-10 python version" of Krizhevsky's page: ``data_batch_1``
  .. ``data_batch_5`` and ``test_batch``, or CIFAR-100's ``train`` and ``test``);
* ``teacher_images``: Gaussian images labelled by a random ReLU teacher network, any
  shape (CIFAR-shaped for the GPU case).

Every set is an ``ImageData``: float32 images (n, C, H, W), int64 labels.
``metrics_subset`` is the fixed training subset the metrics read (the first images,
unshuffled and unaugmented, as the paper's deep_nets evaluation); ``Augmentation`` is
the random crop with zero padding plus horizontal flip of the paper's CIFAR runs,
drawn from the caller's ``torch.Generator``.

torchvision is not used: its CIFAR reader insists on the published files' MD5 sums (so
it cannot read a small test file, nor a subset) and its random transforms draw from
torch's global generator; the two augmentations are a few lines of torch here.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgdsde.arguments import check_positive_int
from sgdsde.random import as_seed_sequence

CIFAR_FILES = {
    "cifar10": (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
    "cifar100": (("train",), ("test",)),
}
CIFAR_LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_SHAPE = (3, 32, 32)


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A classification problem: images X (n, C, H, W) float32, labels y (n,) int64 in
    [0, n_classes), a test set X_test, y_test of the same shapes, and the configuration
    that built it (written into run outputs)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("X", "X_test"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.float32)
            if arr.ndim != 4:
                raise ValueError(f"{name} must be images (n, C, H, W) (got shape {arr.shape})")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or inf: clean the images first")
            object.__setattr__(self, name, arr)
        if self.X_test.shape[1:] != self.X.shape[1:]:
            raise ValueError(
                f"X_test images are {self.X_test.shape[1:]} but X images {self.X.shape[1:]}"
            )
        check_positive_int(n_classes=self.n_classes)
        for name, images in (("y", self.X), ("y_test", self.X_test)):
            labels = np.ascontiguousarray(getattr(self, name), dtype=np.int64)
            if labels.shape != (images.shape[0],):
                raise ValueError(f"{name} must be ({images.shape[0]},) (got {labels.shape})")
            if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
                raise ValueError(f"{name} must lie in [0, {self.n_classes}) (got a label outside)")
            object.__setattr__(self, name, labels)
        if self.X.shape[0] < 1 or self.X_test.shape[0] < 1:
            raise ValueError("the training and the test set each need at least one image")

    @property
    def n(self) -> int:
        """The number of training images."""
        return self.X.shape[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.X.shape[1:])  # type: ignore[return-value]


def metrics_subset(data: ImageData, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed training subset the metrics read: the first ``size`` training images and
    their labels, unshuffled and unaugmented (the paper's deep_nets use the first
    10,752 CIFAR training images), so every evaluation of a run, and every run, sees the
    same images.

    data: the ``ImageData``.
    size: the number of images, 1 <= size <= data.n.
    """
    check_positive_int(size=size)
    if size > data.n:
        raise ValueError(f"size must be at most the {data.n} training images (got {size})")
    return data.X[:size], data.y[:size]


# ----------------------------------------------------------------------------- digits


def load_digits(n_test: int = 297, seed: Any = 0) -> ImageData:
    """scikit-learn's bundled digits (UCI optical digits; 1797 images of 1 x 8 x 8 with
    integer intensities 0..16, 10 classes), read offline, scaled to [0, 1] (x / 16) and
    split at random into train and test sets.

    n_test: the number of test images (the rest, 1797 - n_test, train).
    seed: int or ``numpy.random.SeedSequence`` of the split (a permutation of the
        images drawn from it).
    """
    from sklearn.datasets import load_digits as sklearn_digits  # ~1 s: only when used

    bunch = sklearn_digits()
    images, labels = bunch.images, bunch.target
    check_positive_int(n_test=n_test)
    if n_test >= len(images):
        raise ValueError(f"n_test must be below the {len(images)} digits (got {n_test})")
    order = np.random.default_rng(as_seed_sequence(seed)).permutation(len(images))
    X = (images[order] / 16.0).astype(np.float32)[:, None]
    y = labels[order]
    config = dict(generator="digits", n_test=n_test, seed=_seed_config(seed))
    return ImageData(X[n_test:], y[n_test:], X[:n_test], y[:n_test], 10, config)


# ---------------------------------------------------------------------------- teacher


def teacher_images(
    n: int = 1000,
    n_test: int = 1000,
    input_shape: tuple[int, ...] = CIFAR_SHAPE,
    n_classes: int = 10,
    teacher_width: int = 64,
    seed: Any = 0,
) -> ImageData:
    """Gaussian images labelled by a random two-layer ReLU teacher.

    x ~ N(0, I) of shape ``input_shape``; label = argmax_k (A relu(W x / sqrt(D)))_k,
    W (teacher_width, D) and A (n_classes, teacher_width) standard normal, D = C*H*W.

    n, n_test: training and test set sizes.
    input_shape: (C, H, W) of one image; CIFAR's (3, 32, 32) by default.
    n_classes: the number of classes.
    teacher_width: the teacher's hidden width.
    seed: int or ``numpy.random.SeedSequence`` of inputs and teacher.
    """
    check_positive_int(n=n, n_test=n_test, n_classes=n_classes, teacher_width=teacher_width)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) of positive sizes (got {input_shape!r})")
    rng = np.random.default_rng(as_seed_sequence(seed))
    dim = int(np.prod(shape))
    W = rng.standard_normal((teacher_width, dim))
    A = rng.standard_normal((n_classes, teacher_width))
    X = rng.standard_normal((n + n_test, dim))
    labels = np.argmax(np.maximum(X @ W.T / np.sqrt(dim), 0.0) @ A.T, axis=1)
    X = X.astype(np.float32).reshape(n + n_test, *shape)
    config = dict(
        generator="teacher_images",
        n=n,
        n_test=n_test,
        input_shape=list(shape),
        n_classes=n_classes,
        teacher_width=teacher_width,
        seed=_seed_config(seed),
    )
    return ImageData(X[:n], labels[:n], X[n:], labels[n:], n_classes, config)


# ------------------------------------------------------------------------------ CIFAR


def load_cifar(
    folder: str | Path,
    dataset: str = "cifar10",
    n_train: int | None = None,
    n_test: int | None = None,
) -> ImageData:
    """CIFAR-10 or CIFAR-100 from the python-pickle batch files in ``folder``.

    Each file holds a dict with b"data", uint8 (N, 3072), each row an image's red, green
    then blue 32 x 32 plane in row-major order (so a row reshaped to (3, 32, 32) is the
    image in CHW order), and the labels, a list of N ints: b"labels" (CIFAR-10, classes
    0..9) or b"fine_labels" (CIFAR-100, classes 0..99). Pixels are scaled to [0, 1]
    (x / 255, no mean/std normalisation, as the paper's ResNet runs).

    folder: the folder holding the files (e.g. the unpacked ``cifar-10-batches-py``).
    dataset: "cifar10" (data_batch_1 .. data_batch_5, test_batch) or "cifar100" (train,
        test).
    n_train, n_test: keep only the first so many images of each set (None: all).

    Files are unpickled with a restricted unpickler that builds only numpy arrays and
    plain containers, so a hostile file cannot run code. A missing folder, missing files
    or a file not in this format raise a ValueError naming the folder and the files
    expected.
    """
    if dataset not in CIFAR_FILES:
        raise ValueError(f"dataset must be one of {sorted(CIFAR_FILES)} (got {dataset!r})")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_positive_int(**{name: value})
    folder = Path(folder)
    train_files, test_files = CIFAR_FILES[dataset]
    expected = f"the {dataset} python batch files {list(train_files + test_files)}"
    if not folder.is_dir():
        raise ValueError(
            f"CIFAR folder {str(folder)!r} does not exist or is not a folder: name the "
            f"folder that holds {expected} (no download happens at run time)"
        )
    missing = [name for name in train_files + test_files if not (folder / name).is_file()]
    if missing:
        hint = _layout_hint(folder, dataset)
        raise ValueError(
            f"CIFAR folder {str(folder)!r} lacks {missing}: it must hold {expected}{hint}"
        )
    X, y = _read_batches(folder, train_files, dataset, expected)
    X_test, y_test = _read_batches(folder, test_files, dataset, expected)
    X, y = X[:n_train], y[:n_train]
    X_test, y_test = X_test[:n_test], y_test[:n_test]
    config = dict(generator=dataset, folder=str(folder), n_train=len(y), n_test=len(y_test))
    return ImageData(X, y, X_test, y_test, CIFAR_CLASSES[dataset], config)


def _layout_hint(folder: Path, dataset: str) -> str:
    """Where the files are one folder further down (the unpacked archive's folder)."""
    inner = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[dataset]
    if (folder / inner).is_dir():
        return f" (they seem to be in {str(folder / inner)!r}: name that folder)"
    return ""


def _read_batches(
    folder: Path, names: tuple[str, ...], dataset: str, expected: str
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        X, y = _read_batch(folder / name, dataset, expected)
        images.append(X)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _read_batch(path: Path, dataset: str, expected: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels (N,) of one batch file."""
    label_key = CIFAR_LABEL_KEY[dataset]

    def corrupt(why: str) -> ValueError:
        return ValueError(
            f"CIFAR file {str(path)!r} in folder {str(path.parent)!r} is not a {dataset} "
            f"python batch file ({why}): the folder must hold {expected}, each a pickled "
            f"dict with b'data' uint8 (N, 3072) and {label_key!r} (N class indices)"
        )

    try:
        with path.open("rb") as fh:
            batch = _SafeUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a corrupt file
        raise corrupt(f"cannot unpickle it: {type(err).__name__}: {err}") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise corrupt(f"expected the keys b'data' and {label_key!r}, found {keys}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise corrupt(f"b'data' must be a uint8 (N, 3072) array, got {_describe(data)}")
    if data.shape[1] != int(np.prod(CIFAR_SHAPE)):
        raise corrupt(f"b'data' has {data.shape[1]} columns, not 3072 = 3 x 32 x 32")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise corrupt(f"{label_key!r} is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise corrupt(f"{data.shape[0]} images but labels of shape {labels.shape}")
    n_classes = CIFAR_CLASSES[dataset]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise corrupt(f"labels outside 0..{n_classes - 1}")
    images = data.reshape(-1, *CIFAR_SHAPE).astype(np.float32) / np.float32(255.0)
    return images, labels


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# The globals a CIFAR pickle needs: numpy arrays (protocols 2 to 5) under numpy 1.x and
# 2.x module names.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        target = _SAFE_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(*target)


# ----------------------------------------------------------------------- augmentation


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random crop with zero padding and random horizontal flip, per image (the paper's
    CIFAR augmentation: padding 4, flip with probability 1/2).

    padding: zero pixels added on each side before a random H x W crop (0: no crop).
    flip: flip each image left-right with probability 1/2.
    """

    padding: int = 4
    flip: bool = True

    def __post_init__(self):
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding must be an integer >= 0 (got {self.padding!r})")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies of ``images`` (m, C, H, W).

        images: a batch of images, on any device.
        generator: the ``torch.Generator`` the crop offsets (uniform in 0..2 padding,
            rows then columns) and flips (uniform < 1/2) are drawn from, in that order;
            the draws are made on its device and moved to the images'.
        """
        m, _, height, width = images.shape
        out = images
        if self.padding:
            p = self.padding
            offsets = torch.randint(
                0, 2 * p + 1, (2, m), generator=generator, device=generator.device
            )
            offsets = offsets.to(images.device)
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            rows = offsets[0][:, None] + torch.arange(height, device=images.device)
            cols = offsets[1][:, None] + torch.arange(width, device=images.device)
            index = torch.arange(m, device=images.device)[:, None, None]
            # advanced indexing puts the (m, H, W) index dims first: (m, H, W, C)
            out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
            out = out.permute(0, 3, 1, 2)
        if self.flip:
            flips = torch.rand(m, generator=generator, device=generator.device) < 0.5
            flips = flips.to(images.device)
            out = torch.where(flips[:, None, None, None], out.flip(-1), out)
        return out.contiguous()


def _seed_config(seed: Any) -> Any:
    """The seed as written into a data set's config, as ``sgdsde.data`` writes it."""
    return int(seed) if isinstance(seed, int | np.integer) else str(seed)
