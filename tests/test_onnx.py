"""ONNX export, checked by ONNX Runtime: every exported network gives fastmlp's probabilities
within 1e-5 on real MNIST test images, at batch 1 and batch 2,000, and a saved file runs in a
fresh process."""
import json
import subprocess
import sys

import numpy as np
import pytest

import onnx  # the [onnx] extra, which CI installs: a missing one fails, never skips
import onnxruntime as ort

from fastmlp import Network, recipes
from fastmlp.errors import ExportError
from fastmlp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from fastmlp.optimizers import Adam

TOLERANCE = 1e-5
N_TEST = 2000


def session(model):
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def networks():
    return {
        "mlp": (Network([784, 300, 10], seed=0), {"lr": 0.1}),
        "deep-dropout": (Network([784, 256, 128, 10], activation="tanh", init="xavier",
                                 dropout=0.2, input_dropout=0.1, seed=1), {"lr": 0.05}),
        "cnn": (recipes.build("cnn", seed=2)[0], {"optimizer": Adam(lr=1e-3)}),
        "sigmoid-quadratic": (Network([784, 64, 10], activation="sigmoid", init="normal",
                                      output="sigmoid", loss="quadratic", seed=3),
                              {"lr": 3.0, "momentum": 0.0}),
    }


@pytest.fixture(scope="module")
def trained(mnist):
    (X, y), (Xt, _) = mnist
    out = {}
    for name, (net, fit) in networks().items():
        n = 3000 if name == "cnn" else 10000
        net.fit(X[:n], y[:n], epochs=1, batch_size=32, verbose=0, **fit)
        out[name] = net
    return out, np.ascontiguousarray(Xt[:N_TEST], np.float32)


@pytest.mark.mnist
@pytest.mark.parametrize("name", list(networks()))
def test_onnx_runtime_agrees_with_predict_proba(trained, name, tmp_path):
    nets, X = trained
    net = nets[name]
    expected = net.predict_proba(X)
    path = tmp_path / f"{name}.onnx"
    net.to_onnx(path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    images = len(net.input_shape) == 3
    inputs = X.reshape(-1, *net.input_shape) if images else X
    assert [d.dim_param or d.dim_value for d in
            model.graph.input[0].type.tensor_type.shape.dim] == ["N", *inputs.shape[1:]]
    run = session(model)
    probabilities, logits = run.run(["probabilities", "logits"], {"input": inputs})
    np.testing.assert_allclose(probabilities, expected, atol=TOLERANCE, rtol=0)
    assert logits.shape == expected.shape
    one_by_one = np.concatenate([run.run(["probabilities"], {"input": inputs[i:i + 1]})[0]
                                 for i in range(len(inputs))])
    np.testing.assert_allclose(one_by_one, expected, atol=TOLERANCE, rtol=0)
    if images:  # the flat rows the network was trained on
        flat = session(net.to_onnx(flat_input=True))
        np.testing.assert_allclose(flat.run(["probabilities"], {"input": X})[0], expected,
                                   atol=TOLERANCE, rtol=0)
    kinds = {node.op_type for node in model.graph.node}
    assert "Dropout" not in kinds
    props = {p.key: p.value for p in model.metadata_props}
    assert props["architecture"] == net.architecture
    assert props["input"].startswith("float32 in [0, 1]")
    assert json.loads(props["layers"]) == [layer.config() for layer in net.layers]


@pytest.mark.mnist
def test_a_saved_model_runs_in_a_fresh_process(trained, tmp_path):
    nets, X = trained
    net = nets["cnn"]
    net.to_onnx(tmp_path / "cnn.onnx")
    np.save(tmp_path / "x.npy", X[:100].reshape(-1, 28, 28, 1))
    code = ("import sys, numpy as np, onnx, onnxruntime as ort\n"
            "model = onnx.load(sys.argv[1])\n"
            "run = ort.InferenceSession(model.SerializeToString(), "
            "providers=['CPUExecutionProvider'])\n"
            "np.save(sys.argv[3], run.run(['probabilities'], {'input': np.load(sys.argv[2])})[0])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "cnn.onnx"),
                    str(tmp_path / "x.npy"), str(tmp_path / "p.npy")], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), net.predict_proba(X[:100]),
                               atol=TOLERANCE, rtol=0)


def small_image_networks():
    """Strides, 'same' padding, stacked convs and pools: the geometry the float64 graph (its
    own windows, no Conv) and the float32 graph (ONNX's Conv) must both get right."""
    return [
        [Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(), Dense(10)],
        [Conv2D(3, 5, strides=2, padding="same", activation="tanh"),
         Conv2D(5, 2, activation="sigmoid"), MaxPool2D(3, strides=2), Dropout(0.3), Flatten(),
         Dense(7, activation="relu"), Dense(10)],
        [Conv2D(2, (3, 2), strides=3), Flatten(), Dense(10)],
    ]


@pytest.mark.mnist
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(3))
def test_image_networks_of_either_dtype_agree(mnist, dtype, case):
    (X, y), (Xt, _) = mnist
    net = Network(small_image_networks()[case], input_shape=(28, 28, 1), dtype=dtype, seed=case)
    net.fit(X[:1000], y[:1000], epochs=1, batch_size=50, optimizer=Adam(lr=1e-3), verbose=0)
    images = np.ascontiguousarray(Xt[:500], dtype).reshape(-1, 28, 28, 1)
    model = net.to_onnx()
    if dtype == "float64":
        assert "Conv" not in {node.op_type for node in model.graph.node}
    got = session(model).run(["probabilities"], {"input": images})[0]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, net.predict_proba(images), atol=TOLERANCE, rtol=0)


def test_the_estimator_exports_labels_and_probabilities_as_skl2onnx_does():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from skl2onnx import to_onnx as skl_to_onnx

    from fastmlp.sklearn import FastMLPClassifier
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    reference = MLPClassifier((16,), max_iter=5, random_state=0).fit(X[:500], y[:500])
    theirs = skl_to_onnx(reference, X[:1], options={"zipmap": False})
    for labels in (y, names[y], y * 10 - 3):
        clf = FastMLPClassifier((32,), max_iter=20, random_state=0).fit(X[:1500], labels[:1500])
        model = clf.to_onnx()
        assert [o.name for o in model.graph.output] == [o.name for o in theirs.graph.output]
        label, probabilities = session(model).run(None, {"input": X[1500:]})
        np.testing.assert_array_equal(label, clf.predict(X[1500:]))
        np.testing.assert_allclose(probabilities, clf.predict_proba(X[1500:]), atol=TOLERANCE)
    for labels in (y % 2 == 0, (y % 3) + 0.0):  # binary booleans, float labels
        clf = FastMLPClassifier((8,), max_iter=10, random_state=0).fit(X, labels)
        label, _ = session(clf.to_onnx()).run(None, {"input": X[:50]})
        np.testing.assert_array_equal(label, clf.predict(X[:50]))


def test_what_cannot_be_exported_is_refused(tmp_path, monkeypatch):
    from fastmlp.sklearn import FastMLPClassifier
    net = Network([4, 3], seed=0)
    for opset in (12, 10 ** 4, "17", True):
        with pytest.raises(ValueError, match="opset must be an integer in"):
            net.to_onnx(opset=opset)
    one_class = FastMLPClassifier((4,), max_iter=2).fit(np.eye(4), np.zeros(4, int))
    with pytest.raises(ExportError, match="one class"):
        one_class.to_onnx()
    mixed = FastMLPClassifier((4,), max_iter=2).fit(np.eye(4), np.array([0, 1, 0, 1]))
    mixed.classes_ = np.array([None, 1], dtype=object)  # no ONNX type holds these labels
    with pytest.raises(ExportError, match="cannot be ONNX labels"):
        mixed.to_onnx()
    path = tmp_path / "kept.onnx"
    path.write_bytes(b"previous")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[onnx\]'"):
        net.to_onnx(path)
    assert path.read_bytes() == b"previous"


def test_fastmlp_export_writes_a_model_onnx_runtime_reads(tmp_path):
    rng = np.random.default_rng(0)
    net = Network([16, 8, 3], seed=0)
    net.fit(rng.random((60, 16)), rng.integers(0, 3, 60), epochs=1, batch_size=20, verbose=0)
    net.save(tmp_path / "m.npz")
    proc = subprocess.run([sys.executable, "-m", "fastmlp", "export", str(tmp_path / "m.npz"),
                           str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "m.onnx" in proc.stdout
    X = rng.random((5, 16)).astype(np.float32)
    got = session(onnx.load(tmp_path / "m.onnx")).run(["probabilities"], {"input": X})[0]
    np.testing.assert_allclose(got, net.predict_proba(X), atol=TOLERANCE)
    from sklearn.datasets import load_digits

    from fastmlp.sklearn import FastMLPClassifier
    digits, labels = load_digits(return_X_y=True)
    digits = (digits / 16).astype(np.float32)
    clf = FastMLPClassifier((16,), max_iter=3).fit(digits, labels)
    clf.save(tmp_path / "clf.npz")
    proc = subprocess.run([sys.executable, "-m", "fastmlp", "export", str(tmp_path / "clf.npz"),
                           str(tmp_path / "clf.onnx")], capture_output=True, text=True)
    assert proc.returncode == 0 and "outputs label, probabilities" in proc.stdout, proc.stderr
    label, _ = session(onnx.load(tmp_path / "clf.onnx")).run(None, {"input": digits})
    np.testing.assert_array_equal(label, clf.predict(digits))
    bad = subprocess.run([sys.executable, "-m", "fastmlp", "export", str(tmp_path / "none.npz"),
                          str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert bad.returncode == 2 and "none.npz" in bad.stderr


def random_network(rng):
    """A random stack of the kinds fastmlp exports, or None when the draw does not fit its
    input (a layer refuses it)."""
    acts = [None, "relu", "sigmoid", "tanh"]
    output, loss = [("softmax", "cross_entropy"), ("sigmoid", "cross_entropy"),
                    ("sigmoid", "quadratic")][rng.integers(3)]
    layers = []
    if rng.random() < 0.6:
        shape = (int(rng.integers(4, 15)), int(rng.integers(4, 15)), int(rng.choice([1, 3])))
        for _ in range(rng.integers(1, 3)):
            layers.append(Conv2D(int(rng.integers(1, 6)), int(rng.integers(1, 4)),
                                 strides=int(rng.integers(1, 3)),
                                 padding=str(rng.choice(["valid", "same"])),
                                 activation=acts[rng.integers(4)]))
            if rng.random() < 0.5:
                layers.append(MaxPool2D(int(rng.integers(1, 3))))
            if rng.random() < 0.3:
                layers.append(Dropout(0.25))
        layers.append(Flatten())
    else:
        shape = (int(rng.integers(3, 60)),)
    for _ in range(rng.integers(0, 3)):
        layers.append(Dense(int(rng.integers(1, 40)), activation=acts[1 + rng.integers(3)]))
        if rng.random() < 0.3:
            layers.append(Dropout(0.5))
    layers.append(Dense(int(rng.integers(2, 11))))
    try:
        return Network(layers, input_shape=shape, output=output, loss=loss,
                       dtype=str(rng.choice(["float32", "float64"])),
                       seed=int(rng.integers(1000)))
    except ValueError:
        return None


def test_random_networks_export_and_agree_or_are_refused():
    """#43: a fuzzed set of stacks within the supported kinds, shapes and dtypes."""
    rng = np.random.default_rng(2026)
    exported = 0
    while exported < 40:
        net = random_network(rng)
        if net is None:
            continue
        X = rng.random((33, *net.input_shape))
        X[X < 0.4] = 0
        X = X.astype(net.dtype)
        try:
            model = net.to_onnx(opset=int(rng.choice([13, 17, 18])))
        except ExportError:
            continue  # refused, never written wrong
        onnx.checker.check_model(model, full_check=True)
        got = session(model).run(["probabilities"], {"input": X})[0]
        tolerance = TOLERANCE if net.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, net.predict_proba(X), atol=tolerance, rtol=0,
                                   err_msg=net.architecture)
        exported += 1
