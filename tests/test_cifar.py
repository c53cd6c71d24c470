"""CIFAR-10's binary format on small files the tests write themselves (known pixels and labels,
checked channel by channel), every way a file can be wrong, the archive, the download against a
local HTTP server, and the course notebook's CNN end to end from the CLI."""
import hashlib
import io
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import CIFAR10, CIFAR10_RECORD, load_cifar10
from fastmlp.errors import DataFormatError, DataNotFoundError

NAMES = CIFAR10["train"] + CIFAR10["test"]


def records(n, seed):
    """n records of known content: labels, and per image one value per channel plane
    (R = 10 + image, G = 100 + image, B = 200 + image) with pixel (0, 1) of red set to 7."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    out = np.zeros((n, CIFAR10_RECORD), np.uint8)
    out[:, 0] = labels
    for i in range(n):
        planes = np.empty((3, 32, 32), np.uint8)
        planes[0], planes[1], planes[2] = 10 + i, 100 + i, 200 + i
        planes[0, 0, 1] = 7
        out[i, 1:] = planes.reshape(-1)
    return out, labels


def write_batches(folder, counts=(3, 2, 2, 1, 2, 4)):
    """The six batch files (and batches.meta.txt); returns {name: labels}."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for k, (name, n) in enumerate(zip(NAMES, counts)):
        data, labels[name] = records(n, k)
        (folder / name).write_bytes(data.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(datasets.CIFAR10_CLASSES) + "\n")
    return labels


def write_archive(path, folder):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=CIFAR10["folder"])
    return path


def check_content(X, y, labels):
    expected = np.concatenate([labels[n] for n in CIFAR10["train"]])
    np.testing.assert_array_equal(y, expected)
    first = 0
    for name in CIFAR10["train"]:
        for i in range(len(labels[name])):
            img = X[first + i]
            assert img.shape == (32, 32, 3)
            np.testing.assert_allclose(img[5, 5], np.array([10 + i, 100 + i, 200 + i]) / 255,
                                       rtol=1e-6)
            assert img[0, 1, 0] == pytest.approx(7 / 255) and img[1, 0, 0] == img[5, 5, 0]
        first += len(labels[name])


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_reads_the_binary_format_channels_last(tmp_path, no_cache, layout):
    labels = write_batches(tmp_path / "src" / CIFAR10["folder"])
    root = tmp_path / "data"
    if layout == "folder":
        root = tmp_path / "src"
    else:
        root.mkdir()
        write_archive(root / CIFAR10["archive"], tmp_path / "src" / CIFAR10["folder"])
    (X, y), (Xt, yt) = load_cifar10(root)
    assert X.dtype == np.float32 and y.dtype == np.int64 and X.shape == (10, 32, 32, 3)
    check_content(X, y, labels)
    np.testing.assert_array_equal(yt, labels["test_batch.bin"])
    (Xf, _), _, (Xt2, _) = load_cifar10(root, flatten=True, validation_size=3, dtype="float64")
    assert Xf.shape == (7, 3072) and Xf.dtype == np.float64
    np.testing.assert_allclose(Xf, X[:7].reshape(7, -1))  # rows in (h, w, c) order
    assert load_cifar10(root, test_only=True)[0].shape == (4, 32, 32, 3)


def test_found_through_the_environment_variable(tmp_path, no_cache, monkeypatch):
    write_batches(tmp_path / "env" / "cifar10" / CIFAR10["folder"])
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    name, ((X, y), (Xt, yt)) = datasets.load_dataset("cifar10")
    assert name == "cifar10" and X.shape == (10, 3072) and len(yt) == 4


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "data_batch_2.bin").write_bytes((f / "data_batch_2.bin").read_bytes()[:-5]),
     r"data_batch_2.bin: \d+ bytes is not a whole number"),
    (lambda f: (f / "data_batch_3.bin").unlink(), r"data_batch_3.bin: missing"),
    (lambda f: (f / "test_batch.bin").write_bytes(b"\x0c" + b"\x00" * 3072),
     r"test_batch.bin: record 0 has label 12"),
    (lambda f: (f / "data_batch_1.bin").write_bytes(b""), r"data_batch_1.bin: 0 bytes"),
])
def test_bad_files_name_the_file(tmp_path, no_cache, damage, message):
    folder = tmp_path / CIFAR10["folder"]
    write_batches(folder)
    damage(folder)
    with pytest.raises(DataFormatError, match=message):
        load_cifar10(tmp_path)


def test_truncated_or_corrupt_archive(tmp_path, no_cache):
    write_batches(tmp_path / "src" / CIFAR10["folder"])
    archive = write_archive(tmp_path / CIFAR10["archive"], tmp_path / "src" / CIFAR10["folder"])
    data = archive.read_bytes()
    archive.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataFormatError, match="cifar-10-binary.tar.gz"):
        load_cifar10(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # an archive without the batches
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DataFormatError, match="test_batch.bin is missing"):
        load_cifar10(tmp_path)


def test_offline_error_names_the_folders(tmp_path, no_cache):
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(DataNotFoundError, match="cifar-10-binary.tar.gz") as info:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_cifar10(tmp_path / "missing")
    with pytest.raises(DataNotFoundError):
        load_cifar10(tmp_path, download=False)


def test_download_is_verified_into_the_cache(tmp_path, no_cache, http_server, monkeypatch):
    root, url = http_server
    labels = write_batches(tmp_path / "src" / CIFAR10["folder"])
    archive = write_archive(root / CIFAR10["archive"], tmp_path / "src" / CIFAR10["folder"])
    monkeypatch.setenv("FASTMLP_MIRRORS", url)
    with pytest.raises(DataNotFoundError, match="hash"):  # the published checksum: not ours
        load_cifar10()
    assert not (no_cache / "cifar10" / CIFAR10["archive"]).exists()
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(CIFAR10, "md5", md5)
    monkeypatch.setenv("FASTMLP_MIRRORS", "http://127.0.0.1:9/ " + url)  # first mirror is down
    (X, y), _ = load_cifar10()
    check_content(X, y, labels)
    assert (no_cache / "cifar10" / CIFAR10["archive"]).is_file()
    explicit = tmp_path / "explicit"  # an explicit folder gets the download itself
    explicit.mkdir()
    (X, y), _ = load_cifar10(explicit)
    check_content(X, y, labels)
    assert (explicit / "cifar10" / CIFAR10["archive"]).is_file()


def test_course_cifar_cnn_trains_from_the_cli(tmp_path):
    write_batches(tmp_path / "data" / CIFAR10["folder"], counts=(20, 20, 20, 20, 20, 30))
    out = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--dataset", "cifar10",
                          "--data-dir", str(tmp_path / "data"), "--recipe", "course-cifar-cnn",
                          "--epochs", "2", "--out", str(tmp_path / "m.npz")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "(None, 32, 32, 8)" in out.stdout and "Epoch 2/2" in out.stdout
    assert "Test loss" in out.stdout and (tmp_path / "m.npz").is_file()
