"""Model files: arrays in an uncompressed .npz plus JSON metadata, never pickled.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a failed save leaves any previous file intact. Reading checks the zip structure,
every array header (dtype, shape) against the metadata, and the sizes against the file's
size before reading any data, so a hostile file can neither run code nor ask for memory.
"""
import ast
import io
import json
import lzma
import math
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ModelFormatError

FORMAT = "fastmlp-model"
FORMAT_VERSION = 1
META_KEY = "meta.json"
MAX_META_BYTES = 1 << 24


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, write):
    """Call write(file) on a temp file beside path, then rename it over path. The file gets the
    mode an ordinary new file would (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_arrays(path, arrays, meta):
    """Write {name: array} and the metadata dict to path atomically."""
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION,
                arrays={k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()})
    meta_bytes = json.dumps(meta, allow_nan=False).encode()

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(META_KEY, meta_bytes)
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                zf.writestr(f"{name}.npy", buf.getvalue())

    atomic_write_bytes(path, write)


def load_arrays(path):
    """Read a file written by :func:`save_arrays`: returns (arrays, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    file_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            return _read(zf, path, file_size)
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError,
            NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError) as exc:
        # a flipped compression-method field sends stored bytes to zlib or lzma
        raise ModelFormatError(f"{path}: not a readable fastmlp model file ({exc})") from None


def _read(zf, path, file_size):
    names = set(zf.namelist())
    if META_KEY not in names:
        raise ModelFormatError(f"{path}: not a fastmlp model file (no {META_KEY} inside)")
    info = zf.getinfo(META_KEY)
    if info.file_size > MAX_META_BYTES:
        raise ModelFormatError(f"{path}: metadata of {info.file_size} bytes is implausibly large")
    try:
        meta = json.loads(zf.read(META_KEY).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a fastmlp model file (format {meta.get('format')!r})"
                               if isinstance(meta, dict) else f"{path}: metadata is not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: model format version {meta.get('format_version')!r}; "
                               f"this fastmlp reads version {FORMAT_VERSION}")
    declared = meta.get("arrays")
    if not isinstance(declared, dict):
        raise ModelFormatError(f"{path}: metadata lists no arrays")
    total = 0
    for name, spec in declared.items():
        try:
            shape = tuple(int(s) for s in spec["shape"])
            dtype = numeric_dtype(spec["dtype"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"{path}: bad entry for array {name!r} ({exc})") from None
        if dtype.kind not in "iuf" or any(s < 0 for s in shape):
            raise ModelFormatError(f"{path}: array {name!r} has dtype {dtype} shape {shape}")
        total += math.prod(shape) * dtype.itemsize
    if total > file_size:
        raise ModelFormatError(f"{path}: declares {total} bytes of arrays but the file has "
                               f"{file_size}: truncated or corrupt")
    arrays = {}
    for name, spec in declared.items():
        member = f"{name}.npy"
        if member not in names:
            raise ModelFormatError(f"{path}: array {name!r} is missing")
        arrays[name] = _read_member(zf, member, path, tuple(spec["shape"]),
                                    numeric_dtype(spec["dtype"]))
    return arrays, meta


MAX_NPY_HEADER = 1 << 16
_NPY_MAGIC = b"\x93NUMPY"


def parse_npy_header(f, where):
    """(shape, fortran_order, dtype) of a .npy stream, or ModelFormatError naming ``where``.

    numpy's own reader lets tokenizer and parser errors escape on a corrupt header; this one
    reads the magic, the version and the header length itself, bounds the header, and accepts
    only a dict of exactly numpy's three keys with plain values.
    """
    magic = f.read(8)
    if len(magic) != 8 or magic[:6] != _NPY_MAGIC:
        raise ModelFormatError(f"{where}: not a .npy array (bad magic)")
    version = (magic[6], magic[7])
    if version == (1, 0):
        raw = f.read(2)
        length = int.from_bytes(raw, "little") if len(raw) == 2 else -1
    elif version in ((2, 0), (3, 0)):
        raw = f.read(4)
        length = int.from_bytes(raw, "little") if len(raw) == 4 else -1
    else:
        raise ModelFormatError(f"{where}: .npy version {version[0]}.{version[1]} is not supported")
    if not 0 < length <= MAX_NPY_HEADER:
        raise ModelFormatError(f"{where}: .npy header length {length} is out of range")
    text = f.read(length)
    if len(text) != length:
        raise ModelFormatError(f"{where}: .npy header is truncated")
    try:
        header = ast.literal_eval(text.decode("latin1" if version != (3, 0) else "utf8"))
    except Exception as exc:  # SyntaxError, ValueError, MemoryError, RecursionError, ...
        raise ModelFormatError(f"{where}: .npy header is not readable ({type(exc).__name__})"
                               ) from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ModelFormatError(f"{where}: .npy header must hold descr, fortran_order and shape")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or not isinstance(fortran, bool) or not isinstance(shape, tuple) \
            or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 32:
        raise ModelFormatError(f"{where}: .npy header has a bad value: {_clip(repr(header))}")
    try:
        dtype = numeric_dtype(descr)
    except ValueError:
        raise ModelFormatError(f"{where}: .npy header names an unknown dtype {_clip(descr)!r}"
                               ) from None
    return shape, fortran, dtype


_NUMERIC_DTYPE = re.compile(r"[<>|=]?[iuf][1248]")


def numeric_dtype(text):
    """np.dtype of a plain numeric type string such as '<f4'; anything else is a ValueError
    (numpy's own parser lets SyntaxError escape on strings like ',')."""
    if not isinstance(text, str) or not _NUMERIC_DTYPE.fullmatch(text):
        raise ValueError(f"not a numeric dtype: {_clip(repr(text))}")
    return np.dtype(text)


def _clip(text, limit=80):
    return text if len(text) <= limit else text[:limit] + " ..."


def _read_member(zf, member, path, shape, dtype):
    with zf.open(member) as f:
        got_shape, fortran, got_dtype = parse_npy_header(f, f"{path}: {member}")
        if got_dtype != dtype or tuple(got_shape) != shape or fortran:
            raise ModelFormatError(f"{path}: {member} holds {got_dtype} {tuple(got_shape)}, the "
                                   f"metadata says {dtype} {shape}")
        count = math.prod(shape)
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize or f.read(1):
            raise ModelFormatError(f"{path}: {member} has the wrong number of bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
