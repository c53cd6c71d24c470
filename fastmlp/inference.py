"""Inference: the forward pass over X in batches, with buffers made once per call, and its
compile ahead of the first ``predict`` (``fit`` calls it for data like its training data)."""
import numpy as np

from . import kernels as K
from .compiling import (SPARSE_EVAL_BATCH, compile_ahead, one_blas_thread, step_description,
                        uses_sparse_input)

EVAL_BATCH = 4096
EVAL_BUFFER_VALUES = 16 * 2 ** 20  # inference buffers: at most this many values per batch


def kernel(net, name):
    """The registered kernel ``name`` of ``net``'s backend."""
    pair = K.KERNELS[name]
    return pair.fast if net.backend == "numba" else pair.reference


def logits_batches(net, X, sparse=None):
    """Yield (start, stop, logits view) over X in batches, with buffers made once.

    On the Numba backend, mostly-zero inputs go through the zero-skipping first layer,
    like training does (``sparse``: that decision, if already made for this X)."""
    n = X.shape[0]
    if sparse is None:
        sparse = uses_sparse_input(net, X, SPARSE_EVAL_BATCH)
    # the batch's activations stay within ~64 MB (a CNN's are large per sample)
    per_sample = sum(net._widths) + net.n_features
    batch = max(1, min(n, SPARSE_EVAL_BATCH if sparse else EVAL_BATCH,
                       EVAL_BUFFER_VALUES // per_sample))
    params, plan = net._params(), net._plan(sparse_input=sparse)
    ws = K.make_workspace(params, plan, net.n_features, batch, net.dtype, training=False)
    offsets = np.arange(batch, dtype=np.int64)
    rows = np.empty(batch, np.int64)  # the rows of one batch: no index the size of X
    forward = K.forward if net.backend == "numba" else K.forward_ref
    codes = K.forward_codes(plan)
    ready = net.__dict__.setdefault("_inference_ready", set())
    if net.backend == "numba" and (codes, X.dtype) not in ready:  # once, not per predict
        compile_ahead(K.forward, (X, rows, params, plan, ws, *codes),
                      step_description(plan, net.dtype, "inference"))
        ready.add((codes, X.dtype))
    with one_blas_thread(net.backend == "numba" and K.layers_use_threads(None, plan)):
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            np.add(offsets[:stop - start], start, out=rows[:stop - start])
            forward(X, rows[:stop - start], params, plan, ws, *codes)
            yield start, stop, ws.acts[len(net.layers) - 1][:stop - start]


def compile_inference(net, X, verbose=True):
    """Compile (or load) what predict and evaluate run on data like X; returns the seconds
    spent compiling (0.0 when cached or on the NumPy backend)."""
    if net.backend != "numba":
        return 0.0
    sparse = uses_sparse_input(net, X, SPARSE_EVAL_BATCH)
    params, plan = net._params(), net._plan(sparse_input=sparse)
    ws = K.make_workspace(params, plan, net.n_features, 2, net.dtype, training=False)
    rows = np.arange(2, dtype=np.int64)
    seconds = compile_ahead(K.forward, (X, rows, params, plan, ws, *K.forward_codes(plan)),
                            step_description(plan, net.dtype, "inference"), verbose)
    logits = np.zeros((2, net.n_classes), net.dtype)
    labels = np.zeros(2, np.int64)
    what = f"the output layer ({net.dtype.name})"
    seconds += compile_ahead(K.KERNELS["output_activation"].fast,
                             (net._loss_code, logits, logits.copy()), what, verbose)
    seconds += compile_ahead(K.KERNELS["output_loss"].fast,
                             (net._loss_code, logits, labels, logits.copy()), what, verbose)
    return seconds


def predict_proba(net, X):
    out = np.empty((X.shape[0], net.n_classes), net.dtype)
    activation = kernel(net, "output_activation")
    for start, stop, logits in logits_batches(net, X):
        activation(net._loss_code, logits, out[start:stop])
    return out


def predict(net, X):
    out = np.empty(X.shape[0], np.int64)
    for start, stop, logits in logits_batches(net, X):
        out[start:stop] = np.argmax(logits, axis=1)
    return out


def evaluate(net, X, y, sparse=None):
    """{"loss", "accuracy"} of checked X, y."""
    loss_fn = kernel(net, "output_loss")
    scratch = np.empty((min(X.shape[0], EVAL_BATCH), net.n_classes), net.dtype)
    total, correct = 0.0, 0
    for start, stop, logits in logits_batches(net, X, sparse):
        loss, c = loss_fn(net._loss_code, logits, y[start:stop], scratch[:stop - start])
        total += loss * (stop - start)
        correct += c
    return {"loss": total / X.shape[0], "accuracy": correct / X.shape[0]}
