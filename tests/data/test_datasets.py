import gzip  # noqa: F401  (documenting: torchvision reads the uncompressed raw files)
import pickle
import struct

import numpy as np
import pytest
import torch

from bnn_tune.data import list_datasets, load_dataset, random_crop_flip


def test_registry_lists_all_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "mnist1d", "mnist_5k",
                             "synthetic"]
    with pytest.raises(ValueError, match=r"Unknown dataset 'digit'\. Available: \[.*\]\. Did you mean 'digits'\?"):
        load_dataset("digit")
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        load_dataset("digits", val_fraction=1.5)


@pytest.mark.parametrize("name, shape, n_total", [("digits", (1, 8, 8), 1797), ("synthetic", (1, 8, 8), 2400),
                                                  ("mnist1d", (40,), 5000)])
def test_offline_datasets(name, shape, n_total):
    d = load_dataset(name)
    assert d.input_shape == shape and d.x_train.shape[1:] == shape
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == n_total
    assert d.y_train.dtype == torch.int64 and d.x_train.dtype == torch.float32
    assert set(d.y_train.unique().tolist()) == set(range(d.num_classes))
    assert abs(d.x_train.mean().item()) < 0.05  # standardized with train statistics
    again = load_dataset(name, cache=False)
    assert torch.equal(again.x_val, d.x_val)  # the split is fixed
    # the stored input transform reproduces the test inputs bit for bit from the raw arrays
    t = d.input_transform
    assert t.raw_shape == d.x_test_raw.shape[1:] and t.input_shape == shape and len(t.mean) == np.prod(shape)
    assert torch.equal(t(d.x_test_raw), d.x_test)


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 | arr.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for s in arr.shape:
            f.write(struct.pack(">I", s))
        f.write(arr.tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_loaders_read_raw_files(tmp_path, name, folder):
    pytest.importorskip("torchvision")
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (50, 28, 28)), np.arange(50) % 10
    xte, yte = rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10
    _write_idx(raw / "train-images-idx3-ubyte", xtr)
    _write_idx(raw / "train-labels-idx1-ubyte", ytr)
    _write_idx(raw / "t10k-images-idx3-ubyte", xte)
    _write_idx(raw / "t10k-labels-idx1-ubyte", yte)
    d = load_dataset(name, root=str(tmp_path), val_fraction=0.2, cache=False)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and d.augment is None
    assert len(d.y_train) == 40 and len(d.y_val) == 10 and len(d.y_test) == 20
    assert torch.equal(d.y_test, torch.as_tensor(yte))
    mean, std = (0.1307, 0.3081) if name == "mnist" else (0.2860, 0.3530)
    expected = (torch.as_tensor(xte, dtype=torch.float32) / 255 - mean) / std
    assert torch.allclose(d.x_test[:, 0], expected, atol=1e-5)
    t = d.input_transform
    assert t.raw_shape == (28, 28) and t.raw_dtype == "uint8" and t.input_shape == (1, 28, 28)
    assert torch.equal(t(xte.astype(np.uint8)), d.x_test)  # raw uint8 pixels as the user has them
    assert torch.equal(t(xte.astype(np.uint8)[:, None]), d.x_test)  # uint8 in the model's layout too
    with pytest.raises(ValueError, match=r"raw inputs of shape \(N, 28, 28\) or \(N, 1, 28, 28\)"):
        t(d.x_test)  # float input of the model's shape: cannot be told from normalized input


@pytest.mark.parametrize("name, folder, n_classes", [("cifar10", "cifar-10-batches-py", 10),
                                                     ("cifar100", "cifar-100-python", 100)])
def test_torchvision_cifar_loaders_read_python_batches(tmp_path, monkeypatch, name, folder, n_classes):
    tv = pytest.importorskip("torchvision")
    cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
    # The files are written in CIFAR's real on-disk format; only the md5 check of the official
    # archives cannot hold for test-written files.
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.datasets.cifar, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))
    root = tmp_path / folder
    root.mkdir()
    rng = np.random.default_rng(1)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(n, fname):
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = list(rng.integers(0, n_classes, n))
        with open(root / fname, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
        return data, labels

    train_files = [f[0] for f in cls.train_list]
    for f in train_files:
        batch(10, f)
    test_data, test_labels = batch(12, cls.test_list[0][0])
    meta_key = cls.meta["key"]
    with open(root / cls.meta["filename"], "wb") as f:
        pickle.dump({meta_key: [f"c{i}" for i in range(n_classes)]}, f)
    d = load_dataset(name, root=str(tmp_path), cache=False)
    assert d.input_shape == (3, 32, 32) and d.num_classes == n_classes
    assert len(d.y_train) + len(d.y_val) == 10 * len(train_files) and len(d.y_test) == 12
    assert d.y_test.tolist() == [int(v) for v in test_labels]
    img0 = torch.as_tensor(test_data[0].reshape(3, 32, 32), dtype=torch.float32) / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465] if name == "cifar10" else [0.5071, 0.4865, 0.4409]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616] if name == "cifar10" else [0.2673, 0.2564, 0.2762]).view(3, 1, 1)
    assert torch.allclose(d.x_test[0], (img0 - mean) / std, atol=1e-5)
    t = d.input_transform
    assert t.raw_shape == (32, 32, 3) and t.channels_last and t.divide_by == 255.0
    hwc = test_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # as torchvision stores CIFAR
    assert torch.equal(t(hwc), d.x_test)
    assert d.augment is random_crop_flip


def test_random_crop_flip_is_the_drawn_shifted_window():
    """Each image is the window at the offsets the generator draws (then flipped when drawn), and over a
    batch the offsets and flips vary: a crop that returns its input unchanged fails."""
    n, pad = 64, 2
    x = torch.arange(n * 2 * 6 * 6, dtype=torch.float32).view(n, 2, 6, 6) + 1
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=pad)
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)  # the same draws, in the function's order
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        xp = torch.nn.functional.pad(x[i], (pad, pad, pad, pad))
        want = xp[:, oy[i]:oy[i] + 6, ox[i]:ox[i] + 6]
        assert torch.equal(out[i], want.flip(-1) if flip[i] else want), i
    assert len(set(zip(oy.tolist(), ox.tolist()))) > 10 and 0 < int(flip.sum()) < n
    assert not torch.equal(out, x)
