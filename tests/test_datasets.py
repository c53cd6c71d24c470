"""MNIST loading: the real files, every corruption case, the lookup order, download, fallback."""
import gzip
import hashlib
import os
import shutil
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import load_mnist, read_idx
from fastmlp.errors import DataFormatError, DataNotFoundError

FILES = list(datasets.DATASETS["mnist"]["files"])


@pytest.fixture(scope="module")
def mnist_dir():
    path = os.environ.get(datasets.ENV_VAR)
    if not path:
        pytest.fail(f"${datasets.ENV_VAR} must point at the MNIST files")
    return Path(path)


def write_idx(path, array, code=0x08, compress=False):
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)
    return path


# ---- the real files ---------------------------------------------------------------------------
@pytest.mark.mnist
def test_real_mnist_shapes_dtypes_range_and_facts(mnist):
    (X, y), (Xt, yt) = mnist
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert X.flags.c_contiguous
    assert list(y[:5]) == [5, 0, 4, 1, 9]
    assert list(np.bincount(y)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(np.bincount(yt)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.mnist
def test_validation_split_and_options(mnist_dir, mnist):
    (X, y), (Xv, yv), (Xt, yt) = load_mnist(mnist_dir, validation_size=10000, dtype="float64",
                                            download=False)
    assert X.shape == (50000, 784) and Xv.shape == (10000, 784) and X.dtype == np.float64
    np.testing.assert_array_equal(yv, mnist[0][1][50000:])
    np.testing.assert_allclose(Xv, mnist[0][0][50000:], rtol=1e-6)
    (Xi, _), _ = load_mnist(mnist_dir, flatten=False, download=False)
    assert Xi.shape == (60000, 28, 28)
    for bad in (-1, 60000, 2.5, True):
        with pytest.raises(ValueError, match="validation_size"):
            load_mnist(mnist_dir, validation_size=bad, download=False)


def test_a_bad_validation_size_is_refused_before_any_file_is_read(tmp_path, no_cache):
    for bad in (-1, 2.5, "10"):  # no data at all here: the argument error must come first
        with pytest.raises(ValueError, match="validation_size must be an integer"):
            load_mnist(tmp_path, validation_size=bad, download=False)
    with pytest.raises(ValueError, match="dtype"):
        load_mnist(mnist_dir, dtype="int8", download=False)


@pytest.mark.mnist
def test_read_idx_gz_raw_and_recompressed_agree(mnist_dir, tmp_path):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(read_idx(raw), labels)
    recompressed = tmp_path / "again.gz"
    recompressed.write_bytes(gzip.compress(raw.read_bytes(), compresslevel=1))
    np.testing.assert_array_equal(read_idx(recompressed), labels)
    assert hashlib.md5(recompressed.read_bytes()).hexdigest() != datasets.DATASETS["mnist"][
        "files"]["t10k-labels-idx1-ubyte.gz"]


def test_read_idx_other_types(tmp_path):
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f.idx", a, code=0x0E)), a)
    b = np.arange(-5, 5, dtype=np.int32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.gz", b, 0x0C, True)), b)


@pytest.mark.mnist
def test_loading_builds_no_pixel_lists(mnist_dir):
    tracemalloc.start()
    try:
        (X, y), (Xt, yt) = load_mnist(mnist_dir, download=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    final = X.nbytes + y.nbytes + Xt.nbytes + yt.nbytes
    assert peak <= final + 60e6, f"peak {peak / 1e6:.0f} MB for {final / 1e6:.0f} MB of arrays"


# ---- corrupt files ------------------------------------------------------------------------------
def _valid_labels(tmp_path):
    return write_idx(tmp_path / "labels.idx", np.arange(100, dtype=np.uint8) % 10)


CORRUPTIONS = {
    "empty": lambda b: b"",
    "short header": lambda b: b[:3],
    "bad magic": lambda b: b"\x01\x02" + b[2:],
    "unknown type code": lambda b: b[:2] + b"\x07" + b[3:],
    "zero dimensions": lambda b: b[:3] + b"\x00" + b[4:],
    "truncated data": lambda b: b[:-10],
    "trailing data": lambda b: b + b"extra",
    "dims larger than data": lambda b: b[:4] + struct.pack(">I", 101) + b[8:],
    "huge declared shape": lambda b: b[:3] + b"\x03" + struct.pack(">III", 2**31, 2**31, 9) + b[8:],
    # the product of these dims wraps to a negative number in int64 arithmetic
    "dims overflowing int64": lambda b: b[:3] + b"\x04" + struct.pack(">IIII", *[2**32 - 1] * 4)
    + b[8:],
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_idx_raises_a_named_error(tmp_path, kind, compress):
    good = _valid_labels(tmp_path).read_bytes()
    bad = CORRUPTIONS[kind](good)
    path = tmp_path / ("bad.gz" if compress else "bad.idx")
    path.write_bytes(gzip.compress(bad) if compress else bad)
    with pytest.raises(DataFormatError, match=str(path).replace("\\", "\\\\")):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    data = gzip.compress(_valid_labels(tmp_path).read_bytes())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[:-12])
    flipped = tmp_path / "flipped.gz"
    flipped.write_bytes(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(200))
    for path in (cut, flipped, garbage):
        with pytest.raises(DataFormatError, match=path.name):
            read_idx(path)


def test_wrong_kind_of_file_is_named(tmp_path, no_cache):
    """Label files where image files belong: the loader says which file and what it expected."""
    d = tmp_path / "mixed"
    d.mkdir()
    labels = np.zeros(60000, np.uint8)
    for name in FILES:
        write_idx(d / name, labels if "train" in name else np.zeros(10000, np.uint8), compress=True)
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz: shape"):
        load_mnist(d, download=False)


def test_label_out_of_range_is_named(tmp_path, no_cache):
    d = tmp_path / "labels"
    d.mkdir()
    write_idx(d / FILES[0], np.zeros((60000, 28, 28), np.uint8), compress=True)
    write_idx(d / FILES[1], np.full(60000, 12, np.uint8), compress=True)
    write_idx(d / FILES[2], np.zeros((10000, 28, 28), np.uint8), compress=True)
    write_idx(d / FILES[3], np.zeros(10000, np.uint8), compress=True)
    with pytest.raises(DataFormatError, match="train-labels.*label 12"):
        load_mnist(d, download=False)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such file"):
        read_idx(tmp_path / "nothing.gz")


# ---- where files are looked for ----------------------------------------------------------------
def _link_all(src, dst):
    dst.mkdir(parents=True)
    for name in FILES:
        (dst / name).symlink_to(src / name)
    return dst


@pytest.mark.mnist
def test_lookup_order_argument_then_env_then_cache(mnist_dir, tmp_path, no_cache, monkeypatch):
    arg = _link_all(mnist_dir, tmp_path / "arg")
    env = _link_all(mnist_dir, tmp_path / "env")
    _link_all(mnist_dir, no_cache / "mnist")
    assert datasets.locate("mnist", arg, download=False)[FILES[0]].parent == arg
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert datasets.locate("mnist", arg, download=False)[FILES[0]].parent == arg
    assert datasets.locate("mnist", None, download=False)[FILES[0]].parent == env
    monkeypatch.delenv(datasets.ENV_VAR)
    assert datasets.locate("mnist", None, download=False)[FILES[0]].parent == no_cache / "mnist"
    # a folder with only some of the files is passed over
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / FILES[0]).symlink_to(mnist_dir / FILES[0])
    with pytest.raises(DataNotFoundError, match=str(partial)):
        datasets.locate("mnist", partial, download=False)
    assert datasets.locate("mnist", None, download=False)[FILES[0]].parent == no_cache / "mnist"


@pytest.mark.mnist
def test_an_explicit_folder_is_used_or_the_call_fails_naming_it(mnist_dir, tmp_path, no_cache,
                                                                monkeypatch):
    """$FASTMLP_DATA (or the cache) never stands in for a folder the caller named."""
    monkeypatch.setenv(datasets.ENV_VAR, str(mnist_dir))
    with pytest.raises(DataNotFoundError, match=f"data_dir {tmp_path / 'nonexistent'}: no such"):
        load_mnist(tmp_path / "nonexistent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(empty)  # the mirrors are unreachable: nothing falls back to $FASTMLP_DATA
    assert str(empty) in str(info.value) and str(mnist_dir) not in str(info.value)
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "nonexistent")):
        datasets.load_dataset(None, tmp_path / "nonexistent")  # no fallback to the 8x8 digits
    fashion_dir = mnist_dir.resolve().parent / "fashion-mnist"
    with pytest.raises(DataNotFoundError, match="holds fashion-mnist, not mnist"):
        load_mnist(fashion_dir, download=False)


@pytest.mark.mnist
def test_a_folder_of_another_dataset_is_passed_over_not_loaded(mnist_dir, tmp_path, no_cache,
                                                               monkeypatch):
    # MNIST and Fashion-MNIST share their file names: MNIST's folder must not serve Fashion-MNIST
    fashion_dir = mnist_dir.resolve().parent / "fashion-mnist"
    assert fashion_dir.is_dir(), f"the real Fashion-MNIST files are expected in {fashion_dir}"
    mnist_only = _link_all(mnist_dir, tmp_path / "data" / "mnist")
    with pytest.raises(DataNotFoundError, match="holds mnist, not fashion-mnist"):
        datasets.locate("fashion-mnist", mnist_only, download=False)
    # the same files, decompressed: still recognised by their labels
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES:
        (raw / name[:-3]).write_bytes(gzip.open(mnist_dir / name).read())
    with pytest.raises(DataNotFoundError, match="holds mnist, not fashion-mnist"):
        datasets.locate("fashion-mnist", raw, download=False)
    assert datasets.locate("mnist", raw, download=False)[FILES[0]].parent == raw
    # $FASTMLP_DATA naming MNIST's folder finds Fashion-MNIST beside it
    monkeypatch.setenv(datasets.ENV_VAR, str(mnist_dir.resolve()))
    found = datasets.locate("fashion-mnist", None, download=False)
    assert found[FILES[0]].parent == fashion_dir
    (X, y), _ = datasets.load_fashion_mnist()
    (Xm, ym), _ = load_mnist()
    assert not np.array_equal(y, ym)
    assert 0.4 < np.count_nonzero(X) / X.size < 0.6  # Fashion's images are half nonzero


def test_offline_error_says_where_it_looked(tmp_path, no_cache):
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    with pytest.raises(DataNotFoundError) as info:
        load_mnist()
    message = str(info.value)
    assert str(no_cache) in message
    assert "download failed" in message and "FASTMLP_DATA" in message


def test_no_download_when_told_not_to(tmp_path, no_cache):
    with pytest.raises(DataNotFoundError, match="Looked in"):
        load_mnist(tmp_path, download=False)
    assert not no_cache.exists()


@pytest.mark.mnist
def test_download_verifies_checksums_into_the_cache(mnist_dir, no_cache, http_server, monkeypatch):
    root, url = http_server
    for name in FILES:
        shutil.copy(mnist_dir / name, root / name)
    # the shared train-images copy was recompressed: checksum the bytes that are served
    files = dict(datasets.DATASETS["mnist"]["files"])
    files[FILES[0]] = hashlib.md5((root / FILES[0]).read_bytes()).hexdigest()
    monkeypatch.setitem(datasets.DATASETS["mnist"], "files", files)
    monkeypatch.setenv("FASTMLP_MIRRORS", "http://127.0.0.1:9/ " + url)  # first mirror is down
    (X, y), (Xt, yt) = load_mnist()
    assert list(y[:5]) == [5, 0, 4, 1, 9] and Xt.shape == (10000, 784)
    assert sorted(p.name for p in (no_cache / "mnist").iterdir() if p.suffix == ".gz") == sorted(FILES)


@pytest.mark.mnist
def test_download_with_a_bad_checksum_fails_and_keeps_nothing(mnist_dir, no_cache, http_server,
                                                               monkeypatch):
    root, url = http_server
    for name in FILES:
        shutil.copy(mnist_dir / name, root / name)
    monkeypatch.setenv("FASTMLP_MIRRORS", url)  # served train-images differs from the canonical
    with pytest.raises(DataNotFoundError, match="hash"):
        load_mnist()
    assert not (no_cache / "mnist" / FILES[0]).exists()


# ---- the offline fallback ----------------------------------------------------------------------
def test_fallback_to_bundled_digits_is_loud(no_cache):
    with pytest.warns(RuntimeWarning, match="falling back to the 8x8 UCI digits"):
        name, ((X, y), (Xt, yt)) = datasets.load_dataset(None)
    assert name == "digits"
    assert X.shape[1] == 64 and len(y) + len(yt) == 1797
    assert 0 <= X.min() and X.max() <= 1 and set(np.unique(y)) == set(range(10))


def test_named_dataset_never_falls_back(no_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataNotFoundError):
            datasets.load_dataset("mnist")
    with pytest.raises(ValueError, match="dataset must be one of"):
        datasets.load_dataset("cifar")
