"""Inference: the forward pass over X, and its compile ahead of the first ``predict`` (``fit``
calls it for data like its training data).

Two paths: a network of dense layers takes the row-by-row kernel (``dense_rows_forward``: one
call, few arguments, each layer skipping zeros) for calls of a few rows, and for mostly-zero
inputs when its weights are few; everything else runs the layer table's ``forward`` in batches,
with the parameters, plan and buffers of each kind of call made once and kept."""
import threading

import numba
import numpy as np

from . import kernels as K
from .compiling import (SPARSE_EVAL_BATCH, compile_ahead, kernel_input, one_blas_thread,
                        step_description, uses_sparse_input)

EVAL_BATCH = 4096
EVAL_BUFFER_VALUES = 16 * 2 ** 20  # inference buffers: at most this many values per batch
# The row-by-row kernel reads every weight once per row, the batched path once per batch: it
# takes calls of a row per thread, and when the network holds at most ROWS_MAX_WEIGHTS weights
# (they stay in L2 between rows) calls of up to ROWS_BATCH rows or of mostly-zero inputs.
# Measured on a 2-core Xeon (AVX-512), 784-300-10 on MNIST, images/s (rows / batched):
# batch 1 ~140k / ~20k, batch 64 347k / 177k, batch 10,000 290k / 227k.
ROWS_BATCH = 64
ROWS_MAX_WEIGHTS = 2 ** 19


def kernel(net, name):
    """The registered kernel ``name`` of ``net``'s backend."""
    pair = K.KERNELS[name]
    return pair.fast if net.backend == "numba" else pair.reference


class _Session:
    """What the forward pass needs for batches of up to ``batch`` rows: parameters, layer
    table, workspace and row buffers, made once per network and kind of input and reused by
    later calls (a call that finds it busy, in another thread, makes its own)."""

    def __init__(self, net, sparse, batch):
        self.params, self.plan = net._params(), net._plan(sparse_input=sparse)
        self.ws = K.make_workspace(self.params, self.plan, net.n_features, batch, net.dtype,
                                   training=False)
        self.layers, self.codes = K.layer_table(self.plan), K.forward_codes(self.plan)
        self.offsets = np.arange(batch, dtype=np.int64)
        self.rows = np.empty(batch, np.int64)  # the rows of one batch: no index the size of X
        self.threads = net.backend == "numba" and K.layers_use_threads(None, self.plan)
        self.compiled_for = set()  # the input dtypes compile_ahead has seen
        self.lock = threading.Lock()


SESSIONS_KEPT = 4


def _session(net, sparse, batch):
    """A session for ``batch`` rows, locked for the caller: the cached one when it is free."""
    sessions = net.__dict__.setdefault("_inference_sessions", {})
    session = sessions.get((sparse, batch))
    if session is not None and session.lock.acquire(blocking=False):
        return session
    session = _Session(net, sparse, batch)
    session.lock.acquire()
    if (sparse, batch) not in sessions:
        while len(sessions) >= SESSIONS_KEPT:
            sessions.pop(next(iter(sessions)))
        sessions[sparse, batch] = session
    return session


def forward_batches(net, X, each, sparse=None):
    """Run the forward pass over X in batches, calling ``each(start, stop, logits)`` for each.

    On the Numba backend, mostly-zero inputs go through the zero-skipping first layer,
    like training does (``sparse``: that decision, if already made for this X)."""
    X = kernel_input(X)
    n = X.shape[0]
    dense = _dense_layers(net)
    threads = numba.get_num_threads()
    if dense is not None and (n <= threads or _rows_kernel_takes(
            dense, n, lambda: sparse if sparse is not None
            else uses_sparse_input(net, X, SPARSE_EVAL_BATCH))):
        logits = np.empty((min(n, EVAL_BATCH), net.n_classes), net.dtype)
        blocks = min(n, threads)
        kernel = K.KERNELS["dense_rows_forward"].fast
        if dense[4] is None:  # once per network: say so if it is about to compile
            compile_ahead(kernel, (X[:1], *dense[:3], logits[:1], 1),
                          f"inference row by row ({net.dtype.name})")
            net.__dict__.setdefault("_inference_sessions", {})["rows"] = dense[:4] + (True,)
        for start in range(0, n, EVAL_BATCH):
            stop = min(start + EVAL_BATCH, n)
            kernel(X[start:stop], *dense[:3], logits[:stop - start], blocks)
            each(start, stop, logits[:stop - start])
        return
    if sparse is None:
        sparse = uses_sparse_input(net, X, SPARSE_EVAL_BATCH)
    # the batch's activations stay within ~64 MB (a CNN's are large per sample); batches of
    # a power of two rows, so that calls of other sizes share the cached sessions
    per_sample = sum(net._widths) + net.n_features
    largest = max(1, min(SPARSE_EVAL_BATCH if sparse else EVAL_BATCH,
                         EVAL_BUFFER_VALUES // per_sample))
    batch = min(largest, 1 << (n - 1).bit_length())
    session = _session(net, sparse, batch)
    try:
        forward = K.forward if net.backend == "numba" else K.forward_ref
        rows, offsets = session.rows, session.offsets
        args = (session.params, session.layers, session.ws, *session.codes)
        if net.backend == "numba" and X.dtype not in session.compiled_for:
            compile_ahead(K.forward, (X, rows, *args),
                          step_description(session.plan, net.dtype, "inference"))
            session.compiled_for.add(X.dtype)
        logits = session.ws.acts[len(net.layers) - 1]
        with one_blas_thread(session.threads):
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                np.add(offsets[:stop - start], start, out=rows[:stop - start])
                forward(X, rows[:stop - start], *args)
                each(start, stop, logits[:stop - start])
    finally:
        session.lock.release()


def _dense_layers(net):
    """(weights, biases, activation codes, weight count, compiled-ahead flag) of a network of
    dense layers on the Numba backend, for the row-by-row kernel; None for other networks (made
    once, kept)."""
    sessions = net.__dict__.setdefault("_inference_sessions", {})
    if "rows" not in sessions:
        dense = [layer for layer in net.layers if layer.kind != "dropout"]
        if net.backend != "numba" or any(layer.kind != "dense" for layer in dense):
            sessions["rows"] = None
        else:
            weights = tuple(net._stored_weights())
            acts = np.array([K.ACTIVATION_CODES[layer.activation or "identity"]
                             for layer in dense], np.int64)
            sessions["rows"] = (weights, tuple(net.biases), acts,
                                sum(W.size for W in weights), None)  # None: not checked yet
    return sessions["rows"]


def _rows_kernel_takes(dense, n, sparse):
    """Whether the row-by-row kernel takes a call of ``n`` rows (more than a row per thread) on
    the dense network ``dense`` (``_dense_layers``); ``sparse()``: whether the input is mostly
    zeros."""
    return dense[3] <= ROWS_MAX_WEIGHTS and (n <= ROWS_BATCH or sparse())


def forget_sessions(net):
    """Drop the cached sessions (their parameter arrays are no longer the network's)."""
    net.__dict__.pop("_inference_sessions", None)


def inference_compiles(net, X):
    """[(dispatcher, args, what)]: what predict and evaluate compile for data like X (the
    Numba backend; none on the NumPy backend)."""
    if net.backend != "numba":
        return []
    X = kernel_input(X)
    sparse = uses_sparse_input(net, X, SPARSE_EVAL_BATCH)
    dense = _dense_layers(net)
    jobs = []
    # the batched forward pass, unless the row-by-row kernel takes calls of any size on such X
    if dense is None or not _rows_kernel_takes(dense, EVAL_BATCH, lambda: sparse):
        params, plan = net._params(), net._plan(sparse_input=sparse)
        ws = K.make_workspace(params, plan, net.n_features, 2, net.dtype, training=False)
        rows = np.arange(2, dtype=np.int64)
        layers, *codes = K.forward_args(plan)
        jobs.append((K.forward, (X, rows, params, layers, ws, *codes),
                     step_description(plan, net.dtype, "inference")))
    logits = np.zeros((2, net.n_classes), net.dtype)
    if dense is not None:
        jobs.append((K.KERNELS["dense_rows_forward"].fast, (X[:2], *dense[:3], logits, 2),
                     f"inference row by row ({net.dtype.name})"))
    labels = np.zeros(2, np.int64)
    what = f"the output layer ({net.dtype.name})"
    jobs.append((K.KERNELS["output_activation"].fast, (net._loss_code, logits, logits.copy()),
                 what))
    jobs.append((K.KERNELS["output_loss"].fast,
                 (net._loss_code, logits, labels, logits.copy()), what))
    return jobs


def predict_proba(net, X):
    out = np.empty((X.shape[0], net.n_classes), net.dtype)
    activation = kernel(net, "output_activation")
    code = net._loss_code
    forward_batches(net, X, lambda start, stop, logits: activation(code, logits, out[start:stop]))
    return out


def predict(net, X):
    out = np.empty(X.shape[0], np.int64)

    def each(start, stop, logits):
        out[start:stop] = np.argmax(logits, axis=1)
    forward_batches(net, X, each)
    return out


def evaluate(net, X, y, sparse=None):
    """{"loss", "accuracy"} of checked X, y."""
    y = kernel_input(y)
    loss_fn = kernel(net, "output_loss")
    scratch = np.empty((min(X.shape[0], EVAL_BATCH), net.n_classes), net.dtype)
    totals = [0.0, 0]

    def each(start, stop, logits):
        loss, correct = loss_fn(net._loss_code, logits, y[start:stop], scratch[:stop - start])
        totals[0] += loss * (stop - start)
        totals[1] += correct
    forward_batches(net, X, each, sparse)
    return {"loss": totals[0] / X.shape[0], "accuracy": totals[1] / X.shape[0]}
