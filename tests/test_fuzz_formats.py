"""Structure-aware fuzzing of fastmlp's files: every mutation lands in a part of the format that
the reader parses (the zip records, each .npy member's magic, version, header length and header
dict, the JSON metadata), and the reader must answer with its own error or a valid model.

A seeded generator (not random whole-file noise, which rarely hits a header with the right
character) makes MUTATIONS_PER_FORMAT files for each format."""
import io
import json
import zipfile

import numpy as np
import pytest

from fastmlp import Network
from fastmlp.errors import ModelFormatError
from fastmlp.serialization import META_KEY

MUTATIONS_PER_FORMAT = 10_000
SPECIAL = b"([{'\\\"}]):,-.0123456789eE \n\x00\xff"
JSON_VALUES = [None, True, -1, 0, 1, 2 ** 63, 1e308, -1e308, "", "x" * 50, [], {}, [1, 2], {"a": 1},
               "float32", "<f8", "|O", [10 ** 9, 10 ** 9], [-1]]


def _members(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _record_offsets(blob):
    """Offsets of every local header, central directory entry and end record."""
    found = []
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        pos = blob.find(sig)
        while pos != -1:
            found.append((sig, pos))
            pos = blob.find(sig, pos + 1)
    return found


# fields of each zip record (offset, width) as the zip specification lays them out
ZIP_FIELDS = {b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (10, 4), (14, 4), (18, 4), (22, 4),
                              (26, 2), (28, 2)],
              b"PK\x01\x02": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 4), (24, 4),
                              (28, 2), (30, 2), (32, 2), (34, 2), (36, 2), (38, 4), (42, 4)],
              b"PK\x05\x06": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]}


def _edit_value(rng, value):
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = list(value)[rng.integers(len(value))]
        if rng.random() < 0.15:
            del value[key]
        else:
            value[key] = _edit_value(rng, value[key])
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = int(rng.integers(len(value)))
        value[i] = _edit_value(rng, value[i])
        return value
    return JSON_VALUES[rng.integers(len(JSON_VALUES))]


def mutate(rng, blob):
    kind = rng.integers(6)
    members = _members(blob)
    npys = [n for n in members if n.endswith(".npy")]
    if kind == 0:  # a zip record field set to an edge value
        sig, pos = _record_offsets(blob)[rng.integers(len(_record_offsets(blob)))]
        off, width = ZIP_FIELDS[sig][rng.integers(len(ZIP_FIELDS[sig]))]
        value = [0, 1, 2 ** (8 * width) - 1, 2 ** (8 * width - 1), int(rng.integers(0, 2 ** 16))
                 ][rng.integers(5)] % 2 ** (8 * width)
        b = bytearray(blob)
        b[pos + off:pos + off + width] = value.to_bytes(width, "little")
        return bytes(b)
    if kind == 1:  # .npy magic, version or header length
        name = npys[rng.integers(len(npys))]
        data = bytearray(members[name])
        i = int(rng.integers(0, 10))
        data[i] = int(rng.integers(256)) if rng.random() < 0.5 else data[i] ^ (1 << rng.integers(8))
        members[name] = bytes(data)
        return _zip(members)
    if kind == 2:  # one character of a .npy header dict replaced by a special one
        name = npys[rng.integers(len(npys))]
        data = bytearray(members[name])
        end = 10 + int.from_bytes(data[8:10], "little")
        data[rng.integers(10, end)] = SPECIAL[rng.integers(len(SPECIAL))]
        members[name] = bytes(data)
        return _zip(members)
    if kind == 3:  # .npy header cut, or the data cut or lengthened
        name = npys[rng.integers(len(npys))]
        data = members[name]
        cut = int(rng.integers(0, len(data) + 1))
        members[name] = data[:cut] if rng.random() < 0.7 else data + data[cut:]
        return _zip(members)
    if kind == 4:  # the JSON metadata: a value anywhere in the tree
        meta = json.loads(members[META_KEY])
        meta = _edit_value(rng, meta)
        members[META_KEY] = json.dumps(meta).encode()
        return _zip(members)
    # the JSON metadata's text: a special character, or cut
    data = bytearray(members[META_KEY])
    if rng.random() < 0.5:
        data[rng.integers(len(data))] = SPECIAL[rng.integers(len(SPECIAL))]
    else:
        data = data[:rng.integers(len(data))]
    members[META_KEY] = bytes(data)
    return _zip(members)


def _model_file(tmp_path, checkpoint, cnn=False):
    from fastmlp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 6)), rng.integers(0, 3, 40)
    net = Network([6, 4, 3], seed=0)
    if cnn:  # a layer stack, Adam's state, dropout
        X = rng.random((40, 36))
        net = Network([Conv2D(2, 3, padding="same", activation="relu"), MaxPool2D(2),
                       Dropout(0.2), Flatten(), Dense(3)], input_shape=(6, 6, 1), seed=0)
    path = tmp_path / "base.npz"
    if checkpoint:
        net.fit(X, y, epochs=1, batch_size=20, verbose=0, checkpoint=path,
                **({"optimizer": "adam"} if cnn else {}))
    else:
        net.fit(X, y, epochs=1, batch_size=20, verbose=0)
        net.save(path)
    return path


def _estimator_file(tmp_path):
    import warnings

    from fastmlp.sklearn import FastMLPClassifier
    rng = np.random.default_rng(0)
    X, y = rng.random((60, 6)), np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]
    clf = FastMLPClassifier((5,), max_iter=3, early_stopping=True, class_weight={"a": 2.0},
                            random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    path = tmp_path / "base.npz"
    clf.save(path)
    return path, FastMLPClassifier.load


def _fix_timings(path):
    """Rewrite a saved file with its measured times set to constants: the file's bytes, hence
    each seeded mutation, are then the same in every run (a case that escapes can be replayed)."""
    from fastmlp.serialization import load_arrays, save_arrays

    def fixed(value, key=None):
        if key in ("epoch_time", "compile_time"):
            return [0.25] * len(value) if isinstance(value, list) else 0.25
        if isinstance(value, dict):
            return {k: fixed(v, k) for k, v in value.items()}
        return value
    arrays, meta = load_arrays(path)
    save_arrays(path, arrays, fixed(meta))


@pytest.mark.parametrize("kind", ["model", "checkpoint", "cnn-checkpoint", "estimator"])
def test_structure_aware_fuzz_raises_only_model_format_errors(tmp_path, kind):
    load = Network.load
    if kind == "estimator":
        path, load = _estimator_file(tmp_path)
    else:
        path = _model_file(tmp_path, kind != "model", cnn=kind.startswith("cnn"))
    _fix_timings(path)
    base = path.read_bytes()
    target = tmp_path / "fuzzed.npz"
    rng = np.random.default_rng(2026)
    rejected = loaded = 0
    escapes = []
    for i in range(MUTATIONS_PER_FORMAT):
        target.write_bytes(mutate(rng, base))
        try:
            loaded_object = load(target)
        except ModelFormatError:
            rejected += 1
            continue
        except Exception as exc:  # an escape: anything but the library's own error
            escapes.append((i, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        loaded += 1
        net = getattr(loaded_object, "net_", loaded_object)
        assert all(np.isfinite(w).all() for w in net.weights + net.biases)
    assert not escapes, f"{len(escapes)} escapes, first: {escapes[:3]}"
    assert rejected > MUTATIONS_PER_FORMAT // 2  # the mutations do reach the checks


def test_the_reported_header_escape_is_a_model_format_error(tmp_path):
    """The issue's reproduction: one character of a member's header replaced by ( [ " or '."""
    path = _model_file(tmp_path, False)
    good = path.read_bytes()
    at = good.find(b"{'descr'")
    for ch in b"([\"'":
        for offset in range(1, 40):
            if good[at + offset] == ch:
                continue  # no change
            b = bytearray(good)
            b[at + offset] = ch
            path.write_bytes(bytes(b))
            with pytest.raises(ModelFormatError):
                Network.load(path)
