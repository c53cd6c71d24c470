"""MNIST-format datasets: an IDX reader, a verified download into the cache, an offline fallback.

Files are looked for in ``data_dir`` alone when it is given; otherwise in ``$FASTMLP_DATA``,
then in the user cache directory (``~/.cache/fastmlp`` on Linux); in each, directly or in a
subfolder named after the dataset (``mnist``, ``fashion-mnist``). Missing files are downloaded
from public mirrors (into ``data_dir`` if given, else the cache) and checked against their
published MD5 checksums.
"""
import gzip
import hashlib
import math
import os
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

from .errors import DataFormatError, DataNotFoundError

ENV_VAR = "FASTMLP_DATA"
MAX_IDX_BYTES = 1 << 31  # a declared payload above 2 GiB is refused before anything is read

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# name -> {file: md5 of the canonical .gz}; shapes every copy must have.
DATASETS = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}
# md5 of each known data set's decompressed label files: the same file names serve MNIST and
# Fashion-MNIST, so a folder's labels tell which of the two it holds (whatever its gzip level).
LABEL_MD5 = {
    "mnist": {"train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    "fashion-mnist": {"train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                      "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
}
_EXPECTED_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,),
}


# ---- IDX reader ---------------------------------------------------------------------------
def read_idx(path):
    """Read an IDX file (gzip-compressed or raw) into a NumPy array of its declared type.

    Validates the magic number, the dimensions and the byte count before trusting anything,
    and raises :class:`DataFormatError` naming the file and the problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            return _read_idx_stream(f, path, None if compressed else path.stat().st_size)
    except DataFormatError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataNotFoundError(f"{path}: no such file") from None
        raise DataFormatError(f"{path}: unreadable or corrupt ({exc})") from None


def _read_exact(f, buf):
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _read_idx_stream(f, path, file_size):
    header = f.read(4)
    if len(header) < 4:
        raise DataFormatError(f"{path}: too short to be an IDX file ({len(header)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", header)
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: not an IDX file (magic number {header.hex()})")
    if not 1 <= ndim <= 4:
        raise DataFormatError(f"{path}: IDX header declares {ndim} dimensions (expected 1 to 4)")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataFormatError(f"{path}: truncated in the IDX header")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(dims)  # exact: an int64 product of four 32-bit dims can wrap negative
    payload = count * dtype.itemsize
    if payload > MAX_IDX_BYTES:
        raise DataFormatError(f"{path}: IDX header declares shape {dims}, {payload} bytes: "
                              f"larger than the {MAX_IDX_BYTES} bytes allowed")
    if file_size is not None and file_size != 4 + 4 * ndim + payload:
        raise DataFormatError(f"{path}: IDX header declares shape {dims} ({payload} bytes of data)"
                              f" but the file holds {file_size - 4 - 4 * ndim}")
    data = np.empty(count, dtype=dtype)
    got = _read_exact(f, data)
    if got != payload:
        raise DataFormatError(f"{path}: truncated: IDX header declares shape {dims} "
                              f"({payload} bytes of data) but only {got} are there")
    if f.read(1):
        raise DataFormatError(f"{path}: more data than its IDX header declares (shape {dims})")
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


# ---- where the files are --------------------------------------------------------------------
def default_cache_dir():
    import platformdirs
    return Path(platformdirs.user_cache_dir("fastmlp"))


def candidate_dirs(name, data_dir=None):
    """The folders searched for ``name``'s files, in order. An explicit ``data_dir`` is the only
    place searched: files elsewhere never stand in for the folder a caller named."""
    if data_dir is not None:
        root = Path(data_dir)
        return [root] if root.name == name else [root, root / name]
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    roots.append(default_cache_dir())
    dirs = []
    for root in roots:
        # a folder named after a known data set (FASTMLP_DATA=.../mnist) has the others beside it
        beside = (root.parent / name,) if root.name in DATASETS and root.name != name else ()
        for d in (root, root / name, *beside):
            if d not in dirs:
                dirs.append(d)
    return dirs


def download_dir(name, data_dir=None):
    """Where missing files of ``name`` are downloaded: into the explicit folder (its ``name``
    subfolder unless it is named so), else into the user cache. A named folder that does not
    exist is an error: nothing is downloaded to a place the caller may have mistyped."""
    if data_dir is None:
        return default_cache_dir() / name
    root = Path(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"data_dir {root}: no such folder (the {name} files were looked "
                                f"for there only, since it was given explicitly)")
    return root if root.name == name else root / name


def _find(directory, filename):
    for candidate in (directory / filename, directory / filename[:-3]):  # .gz, or raw IDX
        if candidate.is_file():
            return candidate
    return None


def known_dataset_of(found):
    """The known data set (``LABEL_MD5``) whose labels the found files hold, or None."""
    for path in found.values():
        stem = path.name.replace(".gz", "")
        if "labels" not in stem:
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as f:
                digest = hashlib.md5(f.read(1 << 20)).hexdigest()
        except (OSError, EOFError, zlib.error):
            return None  # unreadable: the reader says what is wrong with it
        for other, sums in LABEL_MD5.items():
            if sums.get(stem) == digest:
                return other
    return None


def locate(name, data_dir=None, download=True, parts=("train", "t10k")):
    """Paths of ``name``'s files (of the given parts: train, t10k), downloading them into the
    cache if needed. A folder whose labels are another known data set's (MNIST and
    Fashion-MNIST share their file names) is passed over."""
    spec = _spec(name)
    wanted = [f for f in spec["files"] if f.split("-")[0] in parts]
    searched = candidate_dirs(name, data_dir)
    others = []
    for d in searched:
        found = {f: _find(d, f) for f in wanted}
        if all(found.values()):
            holds = known_dataset_of(found)
            if holds in (None, name):
                return found
            others.append(f"{d} holds {holds}, not {name}")
    if not download:
        raise DataNotFoundError(_not_found_message(name, searched, None, others))
    return _download(name, searched, wanted, others, download_dir(name, data_dir))


def _spec(name):
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def _not_found_message(name, searched, reason, others=()):
    lines = [f"The {name} files were not found. Looked in:"]
    lines += [f"  {d}" for d in searched]
    lines += [f"({other})" for other in others]
    if reason:
        lines.append(f"and the download failed: {reason}")
    lines.append(f"Put the four files ({', '.join(DATASETS[name]['files'])}) in one of those "
                 f"folders, or point ${ENV_VAR} or data_dir (--data-dir) at them.")
    return "\n".join(lines)


def _download(name, searched, wanted, others, target):
    import pooch
    spec = _spec(name)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # we say what is downloaded ourselves, once
    paths = {}
    try:
        for filename in wanted:
            errors = []
            for mirror in mirrors(name):
                if sys.stderr.isatty():
                    print(f"Downloading {filename} from {mirror}", file=sys.stderr, flush=True)
                try:
                    paths[filename] = Path(pooch.retrieve(
                        mirror + filename, known_hash=f"md5:{spec['files'][filename]}",
                        fname=filename, path=target, progressbar=sys.stderr.isatty()))
                    break
                except Exception as exc:  # network errors, HTTP errors, checksum mismatch
                    errors.append(f"{mirror}: {_short_reason(exc)}")
            else:
                raise DataNotFoundError(_not_found_message(
                    name, searched, f"{filename} could not be downloaded ({'; '.join(errors)})",
                    others))
    finally:
        logger.setLevel(level)
    return paths


def _shorten(text, limit):
    """At most ``limit`` characters, cut at a word boundary, never mid-word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."


def _short_reason(exc):
    if isinstance(exc, ValueError):  # pooch: the checksum did not match
        return _shorten(str(exc), 160)
    reason = str(exc).split("(Caused by")[0].strip()
    # requests' messages repeat the URL: the mirror is already named
    reason = reason.split(" with url: ")[0]
    return f"{type(exc).__name__}: {_shorten(reason, 80)}"


def mirrors(name):
    """Mirror base URLs, overridable with $FASTMLP_MIRRORS (space separated)."""
    override = os.environ.get("FASTMLP_MIRRORS")
    return override.split() if override else list(_spec(name)["mirrors"])


# ---- loading ----------------------------------------------------------------------------------
def _check_pair(images, labels, img_path, lbl_path):
    stem = img_path.name.replace(".gz", "")
    expected = _EXPECTED_SHAPES.get(stem)
    if expected and images.shape != expected:
        raise DataFormatError(f"{img_path}: shape {images.shape}, expected {expected}")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{img_path}: expected uint8 images of 3 dimensions, got "
                              f"{images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataFormatError(f"{lbl_path}: expected a 1-D uint8 label file, got {labels.dtype} "
                              f"of shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"{lbl_path}: {labels.shape[0]} labels for {images.shape[0]} images "
                              f"in {img_path.name}")
    if labels.size and labels.max() > 9:
        raise DataFormatError(f"{lbl_path}: label {int(labels.max())} outside 0..9")


def _scale(images, dtype, flatten):
    n = images.shape[0]
    out = np.empty(images.shape, dtype=dtype)
    np.multiply(images, dtype.type(1 / 255), out=out, casting="unsafe")
    return out.reshape(n, -1) if flatten else out


def load_idx_dataset(name, data_dir=None, *, validation_size=0, dtype="float32", flatten=True,
                     download=True, test_only=False):
    dtype = _check_options(dtype, validation_size)
    parts = ("t10k",) if test_only else ("train", "t10k")
    paths = locate(name, data_dir, download, parts)
    splits = []
    for part in parts:
        img_path = paths[f"{part}-images-idx3-ubyte.gz"]
        lbl_path = paths[f"{part}-labels-idx1-ubyte.gz"]
        images, labels = read_idx(img_path), read_idx(lbl_path)
        _check_pair(images, labels, img_path, lbl_path)
        splits.append((_scale(images, dtype, flatten), labels.astype(np.int64)))
        del images
    if test_only:
        return splits[0]
    return _with_validation(*splits, validation_size)


def _check_options(dtype, validation_size):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype}")
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) \
            or validation_size < 0:
        raise ValueError(f"validation_size must be an integer >= 0, got {validation_size!r}")
    return dtype


def _with_validation(train, test, validation_size):
    """(train, test), or with validation_size > 0 (train, validation, test): the classic split,
    the last training samples validate."""
    X_train, y_train = train
    if validation_size >= X_train.shape[0]:
        raise ValueError(f"validation_size must be in [0, {X_train.shape[0]}), "
                         f"got {validation_size!r}")
    if validation_size == 0:
        return (X_train, y_train), test
    cut = X_train.shape[0] - validation_size
    return (X_train[:cut], y_train[:cut]), (X_train[cut:], y_train[cut:]), test


def load_mnist(data_dir=None, *, validation_size=0, dtype="float32", flatten=True, download=True):
    """MNIST as ``(X_train, y_train), (X_test, y_test)``, pixels scaled to [0, 1], labels int64.

    With ``validation_size > 0`` the last ``validation_size`` training samples are returned as
    a middle ``(X_val, y_val)`` split (10,000 gives the classic 50k/10k/10k).
    """
    return load_idx_dataset("mnist", data_dir, validation_size=validation_size, dtype=dtype,
                            flatten=flatten, download=download)


def load_fashion_mnist(data_dir=None, *, validation_size=0, dtype="float32", flatten=True,
                       download=True):
    """Fashion-MNIST, in the same format and with the same options as :func:`load_mnist`."""
    return load_idx_dataset("fashion-mnist", data_dir, validation_size=validation_size,
                            dtype=dtype, flatten=flatten, download=download)


def load_digits_8x8(*, validation_size=0, dtype="float32", test_size=360, seed=0):
    """The UCI 8x8 handwritten digits that ship with scikit-learn (1,797 images), offline."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.data / 16.0).astype(dtype)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = X[order], y[order]
    train_end = len(y) - test_size
    if not 0 <= validation_size < train_end:
        raise ValueError(f"validation_size must be in [0, {train_end}), got {validation_size}")
    test = (X[train_end:], y[train_end:])
    if validation_size == 0:
        return (X[:train_end], y[:train_end]), test
    cut = train_end - validation_size
    return (X[:cut], y[:cut]), (X[cut:train_end], y[cut:train_end]), test


# ---- CIFAR-10 (the official binary version) ------------------------------------------------
CIFAR10 = {
    "archive": "cifar-10-binary.tar.gz",
    "md5": "c32a1d4ab5d03f1284b67883e8d87530",
    "mirrors": ["https://www.cs.toronto.edu/~kriz/"],
    "folder": "cifar-10-batches-bin",
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_RECORD = 1 + 3 * 32 * 32  # a label byte, then 1,024 red, 1,024 green, 1,024 blue bytes


def parse_cifar10_batch(data, name):
    """(images (n, 32, 32, 3) uint8 channels-last, labels uint8) of one binary batch."""
    if len(data) == 0 or len(data) % CIFAR10_RECORD:
        raise DataFormatError(f"{name}: {len(data)} bytes is not a whole number of CIFAR-10 "
                              f"records ({CIFAR10_RECORD} bytes each)")
    records = np.frombuffer(data, np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise DataFormatError(f"{name}: record {row} has label {labels[row]}, outside 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _cifar10_source(data_dir, download):
    """A function name -> bytes over the batches, from an extracted folder or the archive
    (in data_dir, $FASTMLP_DATA, the cache; downloaded into the cache if allowed)."""
    searched = candidate_dirs("cifar10", data_dir)
    for d in searched:
        for folder in (d / CIFAR10["folder"], d):
            if (folder / CIFAR10["train"][0]).is_file() or (folder / "test_batch.bin").is_file():
                return _folder_reader(folder), str(folder)
        if (d / CIFAR10["archive"]).is_file():
            return _archive_reader(d / CIFAR10["archive"]), str(d / CIFAR10["archive"])
    reason = None
    if download:
        archive, reason = _download_cifar10(download_dir("cifar10", data_dir))
        if archive is not None:
            return _archive_reader(archive), str(archive)
    lines = ["The CIFAR-10 binary files were not found. Looked in:"]
    lines += [f"  {d}" for d in searched]
    if reason:
        lines.append(f"and the download failed: {reason}")
    lines.append(f"Put {CIFAR10['archive']} or its extracted {CIFAR10['folder']}/ in one of those "
                 f"folders, or point ${ENV_VAR} or data_dir (--data-dir) at it.")
    raise DataNotFoundError("\n".join(lines))


def _folder_reader(folder):
    def read(name):
        path = folder / name
        if not path.is_file():
            raise DataFormatError(f"{path}: missing (CIFAR-10 has {', '.join(CIFAR10['train'])} "
                                  f"and test_batch.bin)")
        return path.read_bytes(), str(path)
    return read


def _archive_reader(archive):
    import tarfile

    def read(name):
        member = f"{CIFAR10['folder']}/{name}"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise DataFormatError(f"{archive}: {member} is missing from the archive")
                return f.read(), f"{archive}:{member}"
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(f"{archive}: unreadable or corrupt archive ({exc})") from None
    return read


def _download_cifar10(target):
    import pooch
    errors = []
    override = os.environ.get("FASTMLP_MIRRORS")
    for mirror in override.split() if override else CIFAR10["mirrors"]:
        try:
            return Path(pooch.retrieve(mirror + CIFAR10["archive"],
                                       known_hash=f"md5:{CIFAR10['md5']}",
                                       fname=CIFAR10["archive"], path=target,
                                       progressbar=sys.stderr.isatty())), None
        except Exception as exc:  # network errors, HTTP errors, checksum mismatch
            errors.append(f"{mirror}: {_short_reason(exc)}")
    return None, f"{CIFAR10['archive']} could not be downloaded ({'; '.join(errors)})"


def load_cifar10(data_dir=None, *, validation_size=0, dtype="float32", flatten=False,
                 download=True, test_only=False):
    """CIFAR-10 from its official binary distribution (``cifar-10-binary.tar.gz`` or the
    extracted ``cifar-10-batches-bin/``), as ``(X_train, y_train), (X_test, y_test)``: images
    channels-last (n, 32, 32, 3) in [0, 1] (``flatten``: rows of 3,072 values in that order),
    int64 labels; class names in :data:`CIFAR10_CLASSES`. Same options and lookup order as
    :func:`load_mnist`; never reads the pickled "python version"."""
    dtype = _check_options(dtype, validation_size)
    read, _ = _cifar10_source(data_dir, download)

    def part(names):
        images, labels = [], []
        for name in names:
            data, where = read(name)
            x, y = parse_cifar10_batch(data, where)
            images.append(x)
            labels.append(y)
        x = np.concatenate(images) if len(images) > 1 else images[0]
        return _scale(x, dtype, flatten), np.concatenate(labels).astype(np.int64)

    test = part(CIFAR10["test"])
    if test_only:
        return test
    return _with_validation(part(CIFAR10["train"]), test, validation_size)


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
FALLBACK = "digits"


def load_dataset(name=None, data_dir=None, *, validation_size=0, dtype="float32",
                 test_only=False):
    """Load a dataset by name; returns (name actually loaded, splits), or with ``test_only``
    (name, (X_test, y_test)) without reading (or downloading) the training files.

    ``name=None`` means MNIST, falling back — loudly — to the offline 8x8 digits when MNIST is
    neither on disk nor downloadable. A dataset named explicitly, or an explicit ``data_dir``,
    never falls back.
    """
    if name is not None and name != FALLBACK and name not in LOADERS:
        raise ValueError(f"dataset must be one of {sorted(LOADERS) + [FALLBACK]}, got {name!r}")
    if name == FALLBACK:
        splits = load_digits_8x8(validation_size=validation_size, dtype=dtype)
        return FALLBACK, splits[-1] if test_only else splits
    if name == "cifar10":  # flat rows (h, w, c order) like the other datasets' splits
        return name, load_cifar10(data_dir, validation_size=validation_size, dtype=dtype,
                                  flatten=True, test_only=test_only)
    try:
        return name or "mnist", load_idx_dataset(name or "mnist", data_dir,
                                                 validation_size=validation_size, dtype=dtype,
                                                 test_only=test_only)
    except DataNotFoundError as exc:
        if name is not None or data_dir is not None:
            raise
        message = (f"{exc}\n*** MNIST is unavailable: falling back to the 8x8 UCI digits bundled "
                   f"with scikit-learn (1,797 images). A model trained on them takes 8x8 images "
                   f"(64 inputs), not MNIST's 28x28. Pass --dataset mnist to refuse this. ***")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        splits = load_digits_8x8(validation_size=min(validation_size, 300), dtype=dtype)
        return FALLBACK, splits[-1] if test_only else splits
