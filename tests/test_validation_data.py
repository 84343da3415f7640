"""Data of sgdsde.validation: the CIFAR reader on files written here in the published
format (pixels, CHW order, labels, errors), digits, teacher images, the metrics subset
and the seeded augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sgdsde.validation import (
    Augmentation,
    ImageData,
    load_cifar,
    load_digits,
    metrics_subset,
    teacher_images,
    torch_generator,
)

CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write(path, data, labels, key=b"labels", protocol=pickle.HIGHEST_PROTOCOL):
    batch = {b"batch_label": b"test", key: labels, b"data": data}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def _cifar10(folder, per_file=2, seed=0):
    """Five training batches and a test batch of random pixels; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    written = {}
    for name in CIFAR10:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_file)]
        _write(folder / name, data, labels)
        written[name] = (data, labels)
    return written


def test_cifar10_reader_returns_the_pixels_written_in_chw_order(tmp_path):
    written = _cifar10(tmp_path)
    # a marked pixel: green plane (the second 1024 bytes), row 5, column 7, of image 0
    data, labels = written["data_batch_1"]
    data[0, 1024 + 5 * 32 + 7] = 200
    data[0, 0] = 255  # red, top left
    _write(tmp_path / "data_batch_1", data, labels)
    out = load_cifar(tmp_path)
    assert out.X.shape == (10, 3, 32, 32) and out.X_test.shape == (2, 3, 32, 32)
    assert out.X.dtype == np.float32 and out.n_classes == 10
    assert out.X[0, 1, 5, 7] == np.float32(200) / np.float32(255)
    assert out.X[0, 0, 0, 0] == 1.0
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected = train.reshape(10, 3, 32, 32).astype(np.float32) / np.float32(255)
    assert np.array_equal(out.X, expected)
    assert out.y.tolist() == [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert out.y_test.tolist() == written["test_batch"][1]
    first = load_cifar(tmp_path, n_train=3, n_test=1)
    assert np.array_equal(first.X, out.X[:3]) and first.y_test.tolist() == out.y_test[:1].tolist()


def test_cifar100_reads_the_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for name, fine in (("train", [0, 99, 42, 7]), ("test", [5, 6, 7, 8])):
        batch = {b"data": data, b"fine_labels": fine, b"coarse_labels": [0, 1, 2, 3]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    out = load_cifar(tmp_path, dataset="cifar100")
    assert out.y.tolist() == [0, 99, 42, 7] and out.y_test.tolist() == [5, 6, 7, 8]
    assert out.n_classes == 100 and np.array_equal(out.X[1] * 255, data[1].reshape(3, 32, 32))


def test_cifar_pickles_of_numpy_1_and_python_2_protocols_read(tmp_path):
    """The published files are protocol-2 pickles naming numpy.core.multiarray."""
    written = _cifar10(tmp_path)
    data, labels = written["test_batch"]
    raw = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    (tmp_path / "test_batch").write_bytes(raw.replace(b"numpy._core.", b"numpy.core."))
    out = load_cifar(tmp_path)
    assert np.array_equal(out.X_test * 255, data.reshape(-1, 3, 32, 32))


def test_cifar_missing_folder_names_it_and_the_files(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.*does not exist.*data_batch_1.*test_batch"):
        load_cifar(tmp_path / "nowhere")


def test_cifar_wrong_layout_lists_the_missing_files_and_the_inner_folder(tmp_path):
    _cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_cifar(tmp_path)
    message = str(info.value)
    assert "lacks ['data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5'" in message
    assert str(tmp_path) in message
    assert "seem to be in" in message and "cifar-10-batches-py" in message
    with pytest.raises(ValueError, match=r"lacks \['train', 'test'\]"):
        load_cifar(tmp_path, dataset="cifar100")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a pickle at all", "cannot unpickle"),
        (pickle.dumps([1, 2, 3]), "expected the keys"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "columns"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "labels of"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "0..9"),
    ],
    ids=["garbage", "not-a-dict", "dtype", "width", "label-count", "label-range"],
)
def test_cifar_corrupt_batch_file_names_file_folder_and_format(tmp_path, content, why):
    _cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_cifar(tmp_path)
    message = str(info.value)
    assert why in message and "data_batch_3" in message and str(tmp_path) in message
    assert "b'data' uint8 (N, 3072)" in message


def test_cifar_reader_refuses_a_pickle_that_runs_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    _cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(ValueError, match="refused global"):
        load_cifar(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_digits_are_sklearn_images_over_16_split_by_the_seed():
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    data = load_digits(n_test=297, seed=0)
    order = np.random.default_rng(np.random.SeedSequence(0)).permutation(1797)
    assert data.X.shape == (1500, 1, 8, 8) and data.X_test.shape == (297, 1, 8, 8)
    assert np.array_equal(data.X_test[:, 0] * 16, raw.images[order[:297]])
    assert np.array_equal(data.X[:, 0] * 16, raw.images[order[297:]])
    assert np.array_equal(data.y, raw.target[order[297:]])
    assert data.X.min() == 0 and data.X.max() == 1 and data.n_classes == 10
    assert not np.array_equal(load_digits(seed=1).y, data.y)
    with pytest.raises(ValueError, match="n_test must be below"):
        load_digits(n_test=1797)


def test_teacher_images_follow_the_documented_draws():
    data = teacher_images(n=30, n_test=10, input_shape=(2, 3, 3), n_classes=4, teacher_width=5)
    rng = np.random.default_rng(np.random.SeedSequence(0))
    W, A = rng.standard_normal((5, 18)), rng.standard_normal((4, 5))
    X = rng.standard_normal((40, 18))
    labels = np.argmax(np.maximum(X @ W.T / np.sqrt(18), 0) @ A.T, axis=1)
    assert np.array_equal(data.y, labels[:30]) and np.array_equal(data.y_test, labels[30:])
    assert np.array_equal(data.X.reshape(30, 18), X[:30].astype(np.float32))
    assert data.input_shape == (2, 3, 3)


def test_metrics_subset_is_the_first_training_images():
    data = teacher_images(n=20, n_test=5, input_shape=(1, 2, 2), n_classes=3)
    X, y = metrics_subset(data, 7)
    assert np.array_equal(X, data.X[:7]) and np.array_equal(y, data.y[:7])
    with pytest.raises(ValueError, match="at most the 20"):
        metrics_subset(data, 21)


def test_image_data_refuses_labels_outside_the_classes():
    X = np.zeros((2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        ImageData(X, [0, 3], X, [0, 1], 3)


def _images(m=64, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 3, size, size, generator=g) + 0.5  # no zeros: padding shows


def test_augmentation_is_seeded_and_leaves_the_global_rng_alone():
    images = _images()
    state = torch.get_rng_state()
    first = Augmentation()(images, torch_generator(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, Augmentation()(images, torch_generator(7)))
    assert not torch.equal(first, Augmentation()(images, torch_generator(8)))


def test_a_flip_flips_and_about_half_the_images_flip():
    images = _images(m=400)
    out = Augmentation(padding=0, flip=True)(images, torch_generator(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert torch.all(flipped ^ same)  # each image is itself or its mirror image
    # Binomial(400, 1/2): mean 200, sd 10; 5 sd either side
    assert 150 <= int(flipped.sum()) <= 250


def test_a_crop_is_a_window_of_the_zero_padded_image_at_every_offset():
    images, p = _images(m=200), 1
    out = Augmentation(padding=p, flip=False)(images, torch_generator(1))
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    seen = set()
    for o, pad in zip(out, padded, strict=True):
        hits = [
            (i, j)
            for i in range(2 * p + 1)
            for j in range(2 * p + 1)
            if torch.equal(o, pad[:, i : i + 4, j : j + 4])
        ]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == (2 * p + 1) ** 2  # P(an offset never drawn) = 200 (8/9)^200 ~ 1e-8
    with pytest.raises(ValueError, match="padding must be"):
        Augmentation(padding=-1)
