"""A network as a table of layers, run by one compiled training step.

A network's ``Plan`` (``make_plan``) describes everything its step runs. The step does not take
it whole: it takes bundles (namedtuples, which Numba takes as they are), one per concern, each
typed only where a network uses it (``step_args``):

- ``Layers``: the structure (``kind``, ``act``, ``in_act``, geometry and widths per layer, the
  zero-skipping layer), the rule of the output/loss (``loss.loss_rule``) and the seed of the
  random streams;
- the feature arguments (``step_codes``), each None where the network does not use the feature:
  ``images`` and ``sparse`` (flags), ``dropout`` (``DropoutRates``: per-layer thresholds and
  scales), ``threaded`` (the fewest weights of a dense layer run on Numba's threads), ``extras``
  (``Extras``: per-sample weights, per-layer max-norms), ``norm`` (per-layer batch normalization
  settings) and ``augment`` (``Distortions``: the distortions' parameters, field basis, image
  shape);
- ``Params``: ``W`` and ``b``, one array per layer (zero-size for layers without parameters);
  every parameter is a 2-D (weights) or 1-D (biases) array, so each tuple has one Numba type;
- ``OptState``: the optimizer's two state slots per parameter, its hyper-parameters and step;
- ``Workspace``: every buffer of one fit, made once (nothing is allocated per step).

``train_steps`` below is the whole training step, top to bottom; ``train_steps_ref`` is the same
step written with the NumPy twins. Its feature arguments leave out of the compiled code every
feature a network does not use, with that feature's data. What adding a layer kind, an optimizer or a loss
touches is listed in docs/architecture.md.
"""
from collections import namedtuple

import numba
import numpy as np
from numba import njit, prange

from .activations import activate, activate_ref, derivative_mul, derivative_mul_ref
from .augment import (STREAM, augment_batch_ref, augment_params, augment_row,
                      scratch_size as augment_scratch_size)
from .batchnorm import (EPSILON, GAMMA, MOVING_MEAN, batchnorm_backward_ref,
                        batchnorm_forward_ref, batchnorm_inference_ref, norm_apply_block,
                        norm_delta_below_block, norm_grad_statistics, norm_grad_sums_block,
                        norm_inference_block, norm_statistics, norm_sums_block)
from .conv import (N_GEOM, cols_size, conv_backward_block, conv_backward_ref, conv_forward_block,
                   conv_forward_ref, maxpool_backward_ref, maxpool_backward_row,
                   maxpool_forward_ref, maxpool_forward_sample, sum_partials)
from .data import copy_rows, gather_rows, gather_rows_ref, thread_block
from .dense import (THREADED_MIN_WEIGHTS, column_sums, dense_backward, dense_backward_ref,
                    dense_backward_update_rows, dense_forward, dense_forward_ref,
                    dense_partial_product, dense_sum_partials)
from .dropout import (dropout_backward, dropout_backward_ref, dropout_forward_ref, dropout_row,
                      stream_key)
from .loss import LOSS_RULES, loss_rule, output_loss, output_loss_ref
from .optim import (ADAM, BETA1, BETA2, max_norm_columns, max_norm_columns_ref, optimizer_update,
                    optimizer_update_ref)
from .sparse_input import column_cursors, count_columns, fill_and_update_rows, forward_row

DENSE, DROPOUT, CONV, POOL, FLATTEN, BATCHNORM, ACTIVATION = 0, 1, 2, 3, 4, 5, 6
LAYER_KINDS = {"dense": DENSE, "dropout": DROPOUT, "conv2d": CONV, "maxpool2d": POOL,
               "flatten": FLATTEN, "batchnorm": BATCHNORM, "activation": ACTIVATION}
PARAM_KINDS = (DENSE, CONV, BATCHNORM)
# the kinds whose output is an activation's (the layer above applies its derivative)
ACTIVATED_KINDS = (DENSE, CONV, BATCHNORM, ACTIVATION)

Plan = namedtuple("Plan", "kind act in_act threshold scale max_norm loss sparse_layer "
                          "first_param seed sample_weight width geom aug aug_basis aug_shape "
                          "threaded_min norm either_path")
# what the compiled code takes of a Plan (see the module's docstring)
Layers = namedtuple("Layers", "kind act in_act loss sparse_layer first_param seed width geom")
DropoutRates = namedtuple("DropoutRates", "threshold scale")
Extras = namedtuple("Extras", "sample_weight max_norm")
Distortions = namedtuple("Distortions", "params basis shape")
Params = namedtuple("Params", "W b")
OptState = namedtuple("OptState", "s1W s1b s2W s2b hyper t corr")
Workspace = namedtuple("Workspace", "acts deltas gW gb masks argmax xb yb nz_idx nz_val nz_cnt "
                                    "col_ptr col_row col_val col_counts scratch partial cols "
                                    "aug_scratch parts stats norm_sums")


def make_plan(kinds, acts, rates, max_norms, loss, sparse_input, seed, dtype,
              sample_weight=None, widths=None, geoms=None, augment=None,
              threaded_min=THREADED_MIN_WEIGHTS, norms=None, either_path=False):
    """The layer table. ``kinds``/``acts``/``rates``/``max_norms`` hold one entry per layer
    (activation codes of layers without one are ignored; a max-norm of 0 is off).
    ``sample_weight``: one weight per training sample that scales its loss gradient, or None.
    ``widths``: each layer's output size per sample (h·w·c for images); without it, the sizes
    follow from the parameters (dense and dropout layers only). ``geoms``: the geometry row
    (``conv.conv_geometry``) of each conv and pooling layer, None elsewhere. ``augment``:
    (params, elastic field basis, (h, w, c)) of the distortions applied to each minibatch
    (``augment.py``), or None. ``threaded_min``: the fewest weights of a dense layer that the
    training step runs on Numba's threads (``dense.THREADED_MIN_WEIGHTS``). ``norms``: each
    BatchNormalization layer's (momentum, epsilon) (``batchnorm.py``), None elsewhere.
    ``either_path``: the step is made to run the zero-skipping first layer either way, skipping
    zeros or (the plan with ``sparse_layer`` -1) as a dense layer, on Numba's threads where it
    is large: its code and buffers cover both (a fit that times the two paths runs one step).
    ``loss``: the output/loss code or its rule (``loss.loss_rule``: a code makes the rule that
    compiles that loss alone)."""
    from .dropout import keep_threshold
    dtype = np.dtype(dtype)
    L = len(kinds)
    kinds = np.asarray(kinds, np.int64)
    acts = np.asarray(acts, np.int64)
    # The activation whose derivative a layer's backward applies to the δ of its input. Pooling
    # and flattening pass their input's on (a pooled value is the winning input's own value);
    # dropout applies it itself, so the layer above it gets none.
    in_act = np.zeros_like(acts)
    for l in range(1, L):
        below = kinds[l - 1]
        if below in ACTIVATED_KINDS:
            in_act[l] = acts[l - 1]
        elif below == POOL or below == FLATTEN:
            in_act[l] = in_act[l - 1]
    geom = np.zeros((L, N_GEOM), np.int64)
    for l, g in enumerate(geoms or ()):
        if g is not None:
            geom[l] = g
    norm = np.zeros((L, 2), np.float64)
    for l, setting in enumerate(norms or ()):
        if setting is not None:
            norm[l] = setting
    first_param = int(np.flatnonzero(np.isin(kinds, PARAM_KINDS))[0])
    if sparse_input and kinds[first_param] != DENSE:
        raise ValueError("the zero-skipping first layer must be a dense layer")
    if either_path and not sparse_input:
        raise ValueError("either_path needs the zero-skipping first layer (sparse_input)")
    return Plan(kind=kinds, act=acts, in_act=in_act,
                threshold=np.array([keep_threshold(r) for r in rates], np.uint64),
                scale=np.array([1 / (1 - r) for r in rates], dtype),
                max_norm=np.asarray(max_norms, dtype),
                loss=loss if isinstance(loss, LOSS_RULES) else loss_rule(loss),
                sparse_layer=first_param if sparse_input else -1, first_param=first_param,
                seed=int(seed), sample_weight=np.zeros(0, dtype) if sample_weight is None
                else np.ascontiguousarray(sample_weight, dtype),
                width=np.zeros(L, np.int64) if widths is None else np.asarray(widths, np.int64),
                geom=geom,
                aug=augment_params() if augment is None else np.asarray(augment[0], np.float64),
                aug_basis=np.zeros((0, 0), dtype) if augment is None
                else np.asarray(augment[1], dtype),
                aug_shape=np.zeros(0, np.int64) if augment is None
                else np.asarray(augment[2], np.int64), threaded_min=int(threaded_min), norm=norm,
                either_path=bool(either_path))


# Every access to a per-layer tuple by layer index compiles to a switch over its entries, so a
# longer tuple costs compile time (a cold first fit of 784-300-10: 31 s with its tuples padded to
# 8 entries, 21 s with 2). Each tuple has as many entries as the power of two at or above the
# network's depth (zero-size arrays after the last layer): a 2-layer MLP compiles a step for 2,
# and networks of 5 to 8 layers share one for 8, which keeps the number of compiled variants
# (a test suite's, a sweep's) small.
def padded(arrays, empty, slots=0):
    """``arrays`` as a tuple of ``slots`` entries, or of the power of two at or above their
    count where that is more, filled up with ``empty``."""
    arrays = tuple(arrays)
    slots = max(slots, 1 << max(0, len(arrays) - 1).bit_length())
    return arrays + (empty,) * (slots - len(arrays))


def make_params(W, b, dtype, slots=0):
    """Params of per-layer weights W and biases b (zero-size for layers without parameters).
    ``slots``: the fewest entries of each per-layer tuple (a step compiled for 8 runs every
    network of up to 8 layers; the workspace and the optimizer state follow the parameters)."""
    dtype = np.dtype(dtype)
    return Params(W=padded(W, np.zeros((0, 0), dtype), slots),
                  b=padded(b, np.zeros(0, dtype), slots))


def make_state(params, hyper, dtype):
    """Zeroed optimizer state for ``params``: two slots per parameter, step 0."""
    from .optim import N_HYPER, ONE, TINY
    h = np.zeros(N_HYPER, dtype)
    h[:len(hyper)] = hyper
    h[ONE] = 1
    h[TINY] = np.finfo(dtype).tiny
    return OptState(s1W=tuple(np.zeros_like(w) for w in params.W),
                    s1b=tuple(np.zeros_like(b) for b in params.b),
                    s2W=tuple(np.zeros_like(w) for w in params.W),
                    s2b=tuple(np.zeros_like(b) for b in params.b),
                    hyper=h, t=np.zeros(1, np.int64), corr=np.ones(2, dtype))


def threaded_dense_layers(params, plan):
    """The dense layers (but the zero-skipping one) that the training step runs on threads; in
    a step made to run the first layer either way (``Plan.either_path``), the first layer too
    where it is large."""
    skipped = -1 if plan.either_path else plan.sparse_layer
    return [l for l, (k, W) in enumerate(zip(plan.kind, params.W))
            if k == DENSE and l != skipped and W.size >= plan.threaded_min]


def layers_use_threads(params, plan):
    """Whether the step's layers run on Numba's threads: the zero-skipping layer, dropout,
    convolution and pooling, and in training (``params`` given; None for inference) the
    threaded dense layers. Augmentation runs on them only then; in a step whose products are
    all BLAS's it runs on one thread, so that BLAS keeps its threads (Numba's and BLAS's
    threads would spin against each other)."""
    return bool(plan.sparse_layer >= 0 or np.isin(plan.kind, (DROPOUT, CONV, POOL)).any()
                or (params is not None and threaded_dense_layers(params, plan)))


def layer_widths(params, plan, n_in):
    """Each layer's output size per sample: from the table, or else from the parameters."""
    widths = []
    for l in range(len(plan.kind)):
        if plan.width[l] > 0:
            widths.append(int(plan.width[l]))
        elif params.W[l].size:
            widths.append(params.W[l].shape[1])
        else:  # a layer without parameters keeps its input's size
            widths.append(widths[l - 1] if l else n_in)
    return widths


def make_workspace(params, plan, n_in, batch_size, dtype, training=True):
    """Every buffer one fit needs, made once: nothing is allocated per step. Without
    ``training``, just what inference needs (activations, pooling's argmax, zero-skipping)."""
    dtype = np.dtype(dtype)
    widths = layer_widths(params, plan, n_in)
    empty2 = np.zeros((0, 0), dtype)
    sparse_in = n_in if plan.sparse_layer >= 0 or plan.either_path else 0
    threads = numba.get_num_threads()
    rows = batch_size if training else 0
    slots = len(params.W)  # every per-layer tuple as long as the parameters'

    def per_layer(rows):
        # a Flatten's output is its input (the same memory): each buffer is shared with the layer
        # below; a Flatten on the network's input gets a copy of it
        out = []
        for l, (kind, m) in enumerate(zip(plan.kind, widths)):
            out.append(out[l - 1] if kind == FLATTEN and l > 0 else np.zeros((rows, m), dtype))
        return padded(out, empty2, slots)

    conv_sizes = [w.size + w.shape[1] for k, w in zip(plan.kind, params.W) if k == CONV]
    norm_channels = [w.shape[1] for k, w in zip(plan.kind, params.W) if k == BATCHNORM]
    return Workspace(
        acts=per_layer(batch_size),
        deltas=per_layer(rows),
        gW=tuple(np.zeros_like(w) if training else empty2 for w in params.W),
        gb=tuple(np.zeros_like(b) if training else b[:0] for b in params.b),
        masks=padded((np.zeros((rows, m), dtype) if k == DROPOUT else empty2
                      for k, m in zip(plan.kind, widths)), empty2, slots),
        argmax=padded((np.zeros((batch_size, m) if k == POOL else (0, 0), np.int32)
                       for k, m in zip(plan.kind, widths)), np.zeros((0, 0), np.int32), slots),
        xb=np.zeros((batch_size, n_in), dtype),
        yb=np.zeros(rows, np.int64),
        nz_idx=np.zeros((batch_size, sparse_in), np.int32),
        nz_val=np.zeros((batch_size, sparse_in), dtype),
        nz_cnt=np.zeros(batch_size, np.int32),
        col_ptr=np.zeros(sparse_in + 1 if training else 0, np.int64),
        col_row=np.zeros(rows * sparse_in, np.int32),
        col_val=np.zeros(rows * sparse_in, dtype),
        # per thread: its block of rows' nonzeros per input column (the forward region's blocks)
        col_counts=np.zeros((threads if training else 0, sparse_in), np.int64),
        # per thread: one gradient row of the zero-skipping layer, or column norms
        scratch=np.zeros((threads, max(widths + [1])), dtype),
        # per thread: a conv layer's (dW, db) sums over its block of samples
        partial=np.zeros((threads if training else 0, max(conv_sizes + [0])), dtype),
        # per thread: a conv layer's im2col buffers (conv.cols_size)
        cols=np.zeros((threads, max([cols_size(g) if k == CONV else 0 for k, g in
                                     zip(plan.kind, plan.geom)] + [0])), dtype),
        # per thread: the distortions' source image and displacement fields (augment.py); one
        # thread's only, where no layer runs on Numba's threads (see layers_use_threads)
        aug_scratch=np.zeros((threads if layers_use_threads(params, plan) else 1,
                              augment_scratch_size(*plan.aug_shape, plan.aug_basis.shape[0])
                              if len(plan.aug_shape) and training else 0), dtype),
        # per thread: its partial product of a threaded dense layer's forward (dense.py)
        parts=np.zeros((threads, max([batch_size * params.W[l].shape[1]
                                      for l in threaded_dense_layers(params, plan)] + [0])
                        if training else 0), dtype),
        # per batch normalization layer: its minibatch statistics, forward to backward
        stats=padded((np.zeros((4 if training else 0, w.shape[1]) if k == BATCHNORM else (0, 0))
                      for k, w in zip(plan.kind, params.W)), np.zeros((0, 0)), slots),
        # per thread: its partial sums over a block of rows of a batch normalization layer
        norm_sums=np.zeros((threads if training else 0, 2 * max(norm_channels + [0]))),
    )


# ---- which code a network needs ------------------------------------------------------------
# The features a step can leave out of its compiled code, as bits of ``_needed_features``.
IMAGES, SPARSE, DROPOUT_LAYERS, THREADED, EXTRAS, NORM, AUGMENT = 1, 2, 4, 8, 16, 32, 64
FEATURES = (IMAGES, SPARSE, DROPOUT_LAYERS, THREADED, EXTRAS, NORM, AUGMENT)  # step_codes' order
FEATURES_NEEDED = ("a feature argument is None but the layers use it: pass step_args(params, "
                   "plan) (or forward_args(plan)) as the last arguments")


def _layer_features(plan):
    """The feature bits that the layer structure decides (``plan``: a Plan or its Layers):
    IMAGES (conv or pooling layers), SPARSE (the zero-skipping first layer), DROPOUT_LAYERS and
    NORM (batch normalization or activation layers). The compiled code refuses to run a
    structure that needs one of them without its argument."""
    bits = SPARSE if plan.sparse_layer >= 0 else 0
    for l in range(plan.kind.shape[0]):
        kind = plan.kind[l]
        if kind == CONV or kind == POOL:
            bits |= IMAGES
        if kind == DROPOUT:
            bits |= DROPOUT_LAYERS
        if kind == BATCHNORM or kind == ACTIVATION:
            bits |= NORM
    return bits


layer_features = njit(cache=True)(_layer_features)


def _needed_features(params, plan):
    """Bits of the features the plan uses: those of its layers (``_layer_features``), THREADED
    (dense layers the step runs on Numba's threads; ``params`` None for inference, which has
    none), EXTRAS (sample weights or max-norm) and AUGMENT (distortions of the training
    images)."""
    bits = _layer_features(plan)
    if plan.either_path:
        bits |= SPARSE
    if plan.aug_shape.shape[0] > 0:
        bits |= AUGMENT
    if params is not None and threaded_dense_layers(params, plan):
        bits |= THREADED
    if plan.sample_weight.shape[0] > 0 or (plan.max_norm > 0).any():
        bits |= EXTRAS
    return bits


def layer_table(plan):
    """The Layers of a Plan: what every compiled step and forward pass takes of it."""
    return Layers(kind=plan.kind, act=plan.act, in_act=plan.in_act, loss=plan.loss,
                  sparse_layer=plan.sparse_layer, first_param=plan.first_param, seed=plan.seed,
                  width=plan.width, geom=plan.geom)


def step_codes(params, plan, full=False):
    """The feature arguments of train_steps, after the layer table: (images, sparse, dropout,
    threaded, extras, norm, augment), each None where the plan does not use that feature, and
    else its data (``True`` for ``images`` and ``sparse``, which have none of their own; see the
    module's docstring). Numba drops every branch under ``if feature is not None`` whose feature
    is None before typing it, so each configuration compiles only the code it runs (a plain
    MLP: no conv, pooling, augmentation, dropout, threaded dense kernels, sample weights,
    max-norm or normalization; a CNN without augmentation: no distortions) and types only the
    data it uses, and caches it under its own signature. ``full``: every feature, whatever the
    plan uses (one compiled step per dtype runs every plan: the pair tests' cases, which vary
    the features case by case)."""
    bits = _needed_features(params, plan)
    data = (True, True, DropoutRates(plan.threshold, plan.scale), np.int64(plan.threaded_min),
            Extras(plan.sample_weight, plan.max_norm), plan.norm,
            Distortions(plan.aug, plan.aug_basis, plan.aug_shape))
    return tuple(value if full or bits & bit else None for bit, value in zip(FEATURES, data))


def forward_codes(plan, full=False):
    """The feature arguments of forward: (images, sparse, norm), as in ``step_codes``."""
    images, sparse, _, _, _, norm, _ = step_codes(None, plan, full)
    return images, sparse, norm


def step_args(params, plan, full=False):
    """The last arguments of train_steps for ``plan``: its Layers, then ``step_codes``."""
    return (layer_table(plan), *step_codes(params, plan, full))


def forward_args(plan, full=False):
    """The last arguments of forward for ``plan``: its Layers, then ``forward_codes``."""
    return (layer_table(plan), *forward_codes(plan, full))


# Only the explicit prange loops run in parallel: Numba's conversion of array expressions (and
# its fusion pass over them) has nothing to do in these functions but costs compile time.
PRANGE_ONLY = {"prange": True, "comprehension": False, "setitem": False, "reduction": False,
               "numpy": False, "stencil": False, "fusion": False, "inplace_binop": False}


# ---- inference ---------------------------------------------------------------------------
# its own prange loops: see sparse_input.py's note; nogil: a sweep's trials may run on threads
@njit(cache=True, nogil=True, parallel=PRANGE_ONLY)
def forward(X, rows, params, plan, ws, images, sparse, norm):
    """Inference on the rows X[rows] (dropout is the identity): the last layer's activations
    ws.acts[len(plan.kind) - 1][:len(rows)] end up holding the logits. The zero-skipping first
    layer, if the plan has one, reads X itself. ``images``, ``sparse``, ``norm``: see
    ``forward_codes``; ``plan``: the Layers (``forward_args``)."""
    need = layer_features(plan)
    if (images is None and need & IMAGES) or (sparse is None and need & SPARSE) or (
            norm is None and need & NORM):
        raise ValueError(FEATURES_NEEDED)
    n = rows.shape[0]
    if plan.sparse_layer != 0:
        gather_rows(X, rows, ws.xb)
    x = ws.xb[:n]
    for l in range(plan.kind.shape[0]):
        inp = x if l == 0 else ws.acts[l - 1][:n]
        kind = plan.kind[l]
        W, b, a, act, g = params.W[l], params.b[l], ws.acts[l], plan.act[l], plan.geom[l]
        if l == plan.sparse_layer:
            if sparse is not None:
                below, nz_idx, nz_val = ws.acts[l - 1] if l > 0 else ws.xb, ws.nz_idx, ws.nz_val
                for i in prange(n):
                    forward_row(X[rows[i]] if l == 0 else below[i], W, b, act, a[i], nz_idx[i],
                                nz_val[i])
        elif kind == DENSE:
            dense_forward(inp, W, b, act, a[:n])
        elif kind == CONV:
            if images is not None:
                cols, need = ws.cols, cols_size(g)
                T = cols.shape[0]
                for t in prange(T):  # thread t: a block of samples, its own im2col buffer
                    lo, hi = thread_block(n, T, t)
                    conv_forward_block(inp, W, b, act, g, lo, hi, cols[t][:need], a)
        elif kind == POOL:
            if images is not None:
                arg = ws.argmax[l]
                for i in prange(n):
                    maxpool_forward_sample(inp[i], g, a[i], arg[i])
        elif kind == BATCHNORM:
            if norm is not None:  # with the moving statistics, a block of rows per thread
                C = W.shape[1]
                R = n * a.shape[1] // C
                x2, o2, eps = inp.reshape(R, C), a[:n].reshape(R, C), norm[l, EPSILON]
                T = ws.cols.shape[0]
                for t in prange(T):
                    lo, hi = thread_block(R, T, t)
                    norm_inference_block(x2, W, b, eps, lo, hi, o2)
        elif kind == ACTIVATION:
            if norm is not None:
                copy_rows(inp, a)
                activate(a[:n], act)
        elif kind == DROPOUT or (kind == FLATTEN and l == 0):
            copy_rows(inp, a)


def forward_ref(X, rows, params, plan, ws, images, sparse, norm):
    need = _layer_features(plan)
    if (images is None and need & IMAGES) or (sparse is None and need & SPARSE) or (
            norm is None and need & NORM):
        raise ValueError(FEATURES_NEEDED)
    n = rows.shape[0]
    if plan.sparse_layer != 0:  # as forward(): xb holds the gathered rows, unless X is read
        gather_rows_ref(X, rows, ws.xb)
    x = ws.xb[:n] if plan.sparse_layer != 0 else X[rows]
    features = Features(images, sparse, None, None, None, norm, None)
    for l in range(len(plan.kind)):
        forward_twin, _ = TWINS[plan.kind[l]]
        forward_twin(l, x if l == 0 else ws.acts[l - 1][:n], n, params, plan, features, ws, None)


# ---- the reference step's layer table: per layer kind, its (forward, backward) NumPy twins ----
# forward(l, inp, n, params, plan, features, ws, stream): layer l's output for its input ``inp``
# (n rows) into ws.acts[l]; ``plan``: the Layers, ``features``: the feature arguments; ``stream``:
# (epoch, step) in training (dropout draws its mask from it), None in inference (dropout is the
# identity). backward(l, inp, d, d_below, params, plan, features, ws, state, optimizer, c1,
# c2): from layer l's δ ``d``, the δ of its input into ``d_below`` (zero rows where no layer
# below learns) and, for a layer with parameters, their optimizer step.
Features = namedtuple("Features", "images sparse dropout threaded extras norm augment")


def _dense_forward_twin(l, inp, n, params, plan, features, ws, stream):
    dense_forward_ref(inp, params.W[l], params.b[l], plan.act[l], ws.acts[l][:n])


def _conv_forward_twin(l, inp, n, params, plan, features, ws, stream):
    conv_forward_ref(inp, params.W[l], params.b[l], plan.act[l], plan.geom[l], ws.acts[l][:n])


def _pool_forward_twin(l, inp, n, params, plan, features, ws, stream):
    maxpool_forward_ref(inp, plan.geom[l], ws.acts[l][:n], ws.argmax[l][:n])


def _dropout_forward_twin(l, inp, n, params, plan, features, ws, stream):
    if stream is None:
        ws.acts[l][:n] = inp
    else:
        key = np.uint64(stream_key(plan.seed, stream[0], stream[1], l))
        rates = features.dropout
        dropout_forward_ref(inp, key, rates.threshold[l], rates.scale[l], ws.masks[l][:n],
                            ws.acts[l][:n])


def _flatten_forward_twin(l, inp, n, params, plan, features, ws, stream):
    if l == 0:  # elsewhere a Flatten's buffer is its input's
        ws.acts[0][:n] = inp


def _norm_forward_twin(l, inp, n, params, plan, features, ws, stream):
    W, b = params.W[l], params.b[l]
    C = W.shape[1]
    x, out = inp.reshape(-1, C), ws.acts[l][:n].reshape(-1, C)
    if stream is None:
        batchnorm_inference_ref(x, W, b, features.norm[l, EPSILON], out)
    else:
        batchnorm_forward_ref(x, W, b, features.norm[l], ws.stats[l], ws.norm_sums, out)


def _activation_forward_twin(l, inp, n, params, plan, features, ws, stream):
    ws.acts[l][:n] = inp
    activate_ref(ws.acts[l][:n], plan.act[l])


def _update_twin(l, params, plan, ws, state, optimizer, c1, c2):
    h = state.hyper
    optimizer_update_ref(optimizer, params.W[l], ws.gW[l], state.s1W[l], state.s2W[l], h, c1, c2,
                         True)
    optimizer_update_ref(optimizer, params.b[l], ws.gb[l], state.s1b[l], state.s2b[l], h, c1, c2,
                         False)


def _dense_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                         c1, c2):
    dense_backward_ref(inp, params.W[l], d, plan.in_act[l], ws.gW[l], ws.gb[l], d_below)
    _update_twin(l, params, plan, ws, state, optimizer, c1, c2)


def _conv_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                        c1, c2):
    conv_backward_ref(inp, params.W[l], d, plan.in_act[l], plan.geom[l], ws.gW[l], ws.gb[l],
                      d_below, None, None)
    _update_twin(l, params, plan, ws, state, optimizer, c1, c2)


def _pool_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                        c1, c2):
    if d_below.shape[0]:
        maxpool_backward_ref(d, ws.argmax[l][:d.shape[0]], d_below)


def _dropout_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                           c1, c2):
    if d_below.shape[0]:
        dropout_backward_ref(d, ws.masks[l][:d.shape[0]], inp, plan.in_act[l], d_below)


def _flatten_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                           c1, c2):
    pass  # its δ buffer is its input's


def _norm_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                        c1, c2):
    W, gW = params.W[l], ws.gW[l]
    C = W.shape[1]
    dx = d_below.reshape(-1, C) if d_below.shape[0] else np.zeros((0, C), d.dtype)
    batchnorm_backward_ref(inp.reshape(-1, C), d.reshape(-1, C), W, plan.in_act[l], ws.stats[l],
                           ws.norm_sums, gW, ws.gb[l], dx)
    h = state.hyper  # γ (W's first row) and β learn; no weight decay
    optimizer_update_ref(optimizer, W[:GAMMA + 1], gW[:GAMMA + 1], state.s1W[l][:GAMMA + 1],
                         state.s2W[l][:GAMMA + 1], h, c1, c2, False)
    optimizer_update_ref(optimizer, params.b[l], ws.gb[l], state.s1b[l], state.s2b[l], h, c1, c2,
                         False)


def _activation_backward_twin(l, inp, d, d_below, params, plan, features, ws, state, optimizer,
                              c1, c2):
    if d_below.shape[0]:
        d_below[...] = d
        derivative_mul_ref(d_below, inp, plan.in_act[l])


TWINS = {DENSE: (_dense_forward_twin, _dense_backward_twin),
         CONV: (_conv_forward_twin, _conv_backward_twin),
         POOL: (_pool_forward_twin, _pool_backward_twin),
         DROPOUT: (_dropout_forward_twin, _dropout_backward_twin),
         FLATTEN: (_flatten_forward_twin, _flatten_backward_twin),
         BATCHNORM: (_norm_forward_twin, _norm_backward_twin),
         ACTIVATION: (_activation_forward_twin, _activation_backward_twin)}


# ---- training ----------------------------------------------------------------------------
@njit(cache=True)
def store_bias_corrections(rule, h, t, corr):
    """corr <- Adam's (1 - β1ᵗ, 1 - β2ᵗ) for step t, else (1, 1), in the parameters' dtype."""
    if rule.code == ADAM:
        corr[0] = 1.0 - float(h[BETA1]) ** t
        corr[1] = 1.0 - float(h[BETA2]) ** t
    else:
        corr[0] = 1.0
        corr[1] = 1.0


@njit(cache=True)
def scale_rows(d, weights, rows):
    """d[i] *= weights[rows[i]]: each sample's share of the minibatch gradient, weighted."""
    for i in range(d.shape[0]):
        w = weights[rows[i]]
        for j in range(d.shape[1]):
            d[i, j] *= w


# its own prange loops: see sparse_input.py's note; nogil: a sweep's trials may run on threads
@njit(cache=True, nogil=True, parallel=PRANGE_ONLY)
def train_steps(X, y, order, batch_size, step_begin, step_end, epoch, params, state, optimizer,
                ws, plan, images, sparse, dropout, threaded, extras, norm, augment):
    """Minibatch steps [step_begin, step_end) of an epoch whose sample order is ``order``.
    ``optimizer``: its rule (``optim.optimizer_rule``), whose type decides which optimizer's
    update is compiled. ``plan``: the Layers; ``images``, ``sparse``, ``dropout``, ``threaded``,
    ``extras``, ``norm``, ``augment``: see ``step_codes`` (``step_args`` gives all eight).

    Returns (sum over samples of the loss, number classified right, number of samples),
    measured on each minibatch before its update.
    """
    need = layer_features(plan)
    if (images is None and need & IMAGES) or (sparse is None and need & SPARSE) or (
            dropout is None and need & DROPOUT_LAYERS) or (norm is None and need & NORM):
        raise ValueError(FEATURES_NEEDED)
    last = plan.kind.shape[0] - 1
    n = order.shape[0]
    h = state.hyper
    # weight decay on the weights, not the biases: np.bool_ makes the flags plain booleans, so
    # the update compiles once for both (the literals True and False are two signatures)
    decay, no_decay = np.bool_(True), np.bool_(False)
    augmenting = False
    if augment is not None:
        augmenting = augment.shape.shape[0] > 0
    # before a first dense layer on threads the minibatch is gathered on threads, a block of
    # rows each (whole rows: a block of columns each, in the forward region, was slower)
    gathers_on_threads = False
    if threaded is not None:
        gathers_on_threads = (plan.kind[0] == DENSE and plan.sparse_layer != 0
                              and params.W[0].size >= threaded and not augmenting)
    loss_sum = 0.0
    correct = 0
    seen = 0
    for step in range(step_begin, step_end):
        start = step * batch_size
        stop = min(start + batch_size, n)
        nb = stop - start
        rows = order[start:stop]
        for i in range(nb):
            ws.yb[i] = y[rows[i]]
        if augment is not None and augmenting:  # each image distorted as it is gathered
            key = stream_key(plan.seed, epoch, step, STREAM)
            xb, aug_scratch = ws.xb, ws.aug_scratch
            aug, aug_basis, aug_shape = augment.params, augment.basis, augment.shape
            T = aug_scratch.shape[0]
            if T == 1:  # the layers' products are BLAS's, on its threads
                for i in range(nb):
                    augment_row(X[rows[i]], xb[i], key, i, aug, aug_basis, aug_shape,
                                aug_scratch[0])
            else:
                for t in prange(T):
                    lo, hi = thread_block(nb, T, t)
                    for i in range(lo, hi):
                        augment_row(X[rows[i]], xb[i], key, i, aug, aug_basis, aug_shape,
                                    aug_scratch[t])
        elif gathers_on_threads:
            if threaded is not None:  # (else this loop is not compiled)
                xb = ws.xb
                T = ws.cols.shape[0]
                for t in prange(T):
                    lo, hi = thread_block(nb, T, t)
                    gather_rows(X, rows[lo:hi], xb[lo:hi])
        elif plan.sparse_layer != 0:  # else the zero-skipping layer reads X itself
            gather_rows(X, rows, ws.xb)
        x = ws.xb[:nb]

        # ---- forward, layer by layer
        for l in range(last + 1):
            # (prange bodies see only arrays and scalars: Numba cannot pass tuples into them)
            kind, act, g = plan.kind[l], plan.act[l], plan.geom[l]
            W, b, a = params.W[l], params.b[l], ws.acts[l]
            below = ws.acts[l - 1] if l > 0 else ws.xb
            inp = below[:nb]
            on_threads = False  # a large dense layer, on Numba's threads (dense.py)
            if threaded is not None:
                on_threads = kind == DENSE and l != plan.sparse_layer and W.size >= threaded
            if kind == DENSE and l != plan.sparse_layer and not on_threads:
                dense_forward(inp, W, b, act, a[:nb])
            elif kind == BATCHNORM:
                if norm is not None:  # the minibatch's statistics, a block of rows per thread
                    C = W.shape[1]
                    R = nb * a.shape[1] // C
                    x2, o2 = inp.reshape(R, C), a[:nb].reshape(R, C)
                    sums, stats = ws.norm_sums, ws.stats[l]
                    T = sums.shape[0]
                    for t in prange(T):
                        lo, hi = thread_block(R, T, t)
                        norm_sums_block(x2, W[MOVING_MEAN], lo, hi, sums[t])
                    norm_statistics(sums, R, W, norm[l], stats)
                    for t in prange(T):
                        lo, hi = thread_block(R, T, t)
                        norm_apply_block(x2, W, b, stats, lo, hi, o2)
            elif kind == ACTIVATION:
                if norm is not None:
                    T = ws.cols.shape[0]
                    for t in prange(T):
                        lo, hi = thread_block(nb, T, t)
                        copy_rows(inp[lo:hi], a[lo:hi])
                        activate(a[lo:hi], act)
            elif kind == FLATTEN:
                if l == 0:  # elsewhere it shares its input's buffer
                    copy_rows(x, a)
            elif images is not None or sparse is not None or dropout is not None or \
                    threaded is not None:
                # the kinds that run on Numba's threads: per sample, a block of samples each; a
                # dense layer on threads, a block of W's rows each (then its partials summed)
                skips_zeros = l == plan.sparse_layer  # dense, on the nonzeros of each input row
                from_X = skips_zeros and l == 0 and not augmenting
                mask, arg, cols = ws.masks[l], ws.argmax[l], ws.cols
                nz_idx, nz_val, nz_cnt = ws.nz_idx, ws.nz_val, ws.nz_cnt
                col_counts = ws.col_counts
                key, need = np.uint64(0), 0  # (features left out compile neither call)
                if dropout is not None and kind == DROPOUT:
                    key = stream_key(plan.seed, epoch, step, l)
                if images is not None and kind == CONV:
                    need = cols_size(g)
                if dropout is not None:
                    threshold, scale = dropout.threshold[l], dropout.scale[l]
                parts, m = ws.parts, W.shape[1]
                T = cols.shape[0]
                for t in prange(T):
                    lo, hi = thread_block(nb, T, t)
                    if kind == CONV:  # its own im2col buffer
                        if images is not None:
                            conv_forward_block(inp, W, b, act, g, lo, hi, cols[t][:need], a)
                    elif on_threads:
                        k0, k1 = thread_block(W.shape[0], T, t)
                        dense_partial_product(inp, W, k0, k1, parts[t][:nb * m].reshape(nb, m))
                    else:
                        for i in range(lo, hi):
                            if skips_zeros:
                                if sparse is not None:
                                    row = X[rows[i]] if from_X else below[i]
                                    nz_cnt[i] = forward_row(row, W, b, act, a[i], nz_idx[i],
                                                            nz_val[i])
                            elif kind == POOL:
                                if images is not None:
                                    maxpool_forward_sample(inp[i], g, a[i], arg[i])
                            elif dropout is not None:
                                dropout_row(inp[i], key, i, threshold, scale, mask[i], a[i])
                        if skips_zeros and sparse is not None:
                            # the block's nonzeros per input column, for the update's lists
                            count_columns(nz_idx, nz_cnt, lo, hi, col_counts[t])
                if on_threads:
                    for t in prange(T):
                        lo, hi = thread_block(nb, T, t)
                        dense_sum_partials(parts, b, act, a, lo, hi)

        # ---- output activation and loss: d loss / d logits into deltas[last]
        loss, c = output_loss(plan.loss, ws.acts[last][:nb], ws.yb[:nb], ws.deltas[last][:nb])
        if extras is not None:
            if extras.sample_weight.shape[0] > 0:
                scale_rows(ws.deltas[last][:nb], extras.sample_weight, rows)
        loss_sum += loss * nb
        correct += c
        seen += nb

        # ---- backward; each layer's parameters are updated once its δ below is computed
        state.t[0] += 1
        store_bias_corrections(optimizer, h, state.t[0], state.corr)
        c1, c2 = state.corr[0], state.corr[1]
        for l in range(last, plan.first_param - 1, -1):
            kind, g, x_act = plan.kind[l], plan.geom[l], plan.in_act[l]
            W, b, gW, gb = params.W[l], params.b[l], ws.gW[l], ws.gb[l]
            S1, S2, s1b, s2b = state.s1W[l], state.s2W[l], state.s1b[l], state.s2b[l]
            inp = (ws.acts[l - 1] if l > 0 else ws.xb)[:nb]
            d = ws.deltas[l][:nb]
            # δ of the layer below, where some layer below has parameters to learn
            d_below = ws.deltas[l - 1][:nb] if l > plan.first_param else d[:0]
            on_threads = False  # as in the forward
            if threaded is not None:
                on_threads = kind == DENSE and l != plan.sparse_layer and W.size >= threaded
            if l == plan.sparse_layer:
                if sparse is None:
                    continue
                # the minibatch's nonzeros per input column (the transpose the update reads),
                # counted by the forward region's threads a block of rows each: where each
                # column's list starts, then each thread lists its block of W's rows' columns
                # and updates those rows, with its own scratch row (a contiguous block: rows
                # interleaved between threads would share cache lines)
                col_ptr, col_counts = ws.col_ptr, ws.col_counts
                column_cursors(col_counts, col_ptr.shape[0] - 1, col_ptr)
                nz_idx, nz_val, nz_cnt, cursor = ws.nz_idx, ws.nz_val, ws.nz_cnt, col_counts[0]
                col_row, col_val, scratch = ws.col_row, ws.col_val, ws.scratch
                T, n_out = scratch.shape[0], W.shape[1]
                for t in prange(T):
                    j0, j1 = thread_block(W.shape[0], T, t)
                    fill_and_update_rows(j0, j1, nz_idx, nz_val, nz_cnt, nb, W, S1, S2, d,
                                         col_ptr, col_row, col_val, cursor, optimizer, h, c1,
                                         c2, scratch[t][:n_out])
                column_sums(d, gb)
                optimizer_update(optimizer, b, gb, s1b, s2b, h, c1, c2, no_decay)
            elif kind == BATCHNORM:
                if norm is not None:
                    C = W.shape[1]
                    R = nb * d.shape[1] // C
                    x2, d2 = inp.reshape(R, C), d.reshape(R, C)
                    sums, stats = ws.norm_sums, ws.stats[l]
                    T = sums.shape[0]
                    for t in prange(T):
                        lo, hi = thread_block(R, T, t)
                        norm_grad_sums_block(x2, d2, stats, lo, hi, sums[t])
                    norm_grad_statistics(sums, stats, gW, gb)
                    if d_below.shape[0] > 0:  # before γ changes
                        dx2 = d_below.reshape(R, C)
                        for t in prange(T):
                            lo, hi = thread_block(R, T, t)
                            norm_delta_below_block(x2, d2, W, stats, R, x_act, lo, hi, dx2)
                    # γ (W's first row) and β learn, without weight decay
                    k = (GAMMA + 1) * C
                    optimizer_update(optimizer, W.ravel()[:k], gW.ravel()[:k], S1.ravel()[:k],
                                     S2.ravel()[:k], h, c1, c2, no_decay)
                    optimizer_update(optimizer, b, gb, s1b, s2b, h, c1, c2, no_decay)
            elif kind == ACTIVATION and l > plan.first_param:
                if norm is not None:
                    T = ws.cols.shape[0]
                    for t in prange(T):
                        lo, hi = thread_block(nb, T, t)
                        copy_rows(d[lo:hi], d_below[lo:hi])
                        derivative_mul(d_below[lo:hi], inp[lo:hi], x_act)
            elif kind == DENSE and not on_threads:
                dense_backward(inp, W, d, x_act, gW, gb, d_below)
                optimizer_update(optimizer, W.ravel(), gW.ravel(), S1.ravel(), S2.ravel(), h,
                                 c1, c2, decay)
                optimizer_update(optimizer, b, gb, s1b, s2b, h, c1, c2, no_decay)
            elif kind == CONV or (kind == POOL and l > plan.first_param) or on_threads:
                if images is not None or threaded is not None:
                    # on Numba's threads: per sample, a block of samples each, and for a conv
                    # layer its own (dW, db) sums and im2col buffer; a dense layer on threads, a
                    # block of W's rows each (its columns of δ below, then its update)
                    partial, cols, arg = ws.partial, ws.cols, ws.argmax[l]
                    need = 0
                    if images is not None and kind == CONV:
                        need = cols_size(g)
                    T = cols.shape[0]
                    for t in prange(T):
                        lo, hi = thread_block(nb, T, t)
                        if on_threads:
                            j0, j1 = thread_block(W.shape[0], T, t)
                            dense_backward_update_rows(inp, d, j0, j1, W, gW, S1, S2, optimizer,
                                                       h, c1, c2, x_act, d_below)
                        elif kind == CONV:
                            if images is not None:
                                conv_backward_block(inp, W, d, x_act, g, lo, hi, partial[t],
                                                    cols[t][:need], d_below)
                        elif images is not None:
                            for i in range(lo, hi):
                                maxpool_backward_row(d[i], arg[i], d_below[i])
                    if on_threads:
                        column_sums(d, gb)
                        optimizer_update(optimizer, b, gb, s1b, s2b, h, c1, c2, no_decay)
                    elif kind == CONV:
                        sum_partials(partial, gW, gb)
                        optimizer_update(optimizer, W.ravel(), gW.ravel(), S1.ravel(),
                                         S2.ravel(), h, c1, c2, decay)
                        optimizer_update(optimizer, b, gb, s1b, s2b, h, c1, c2, no_decay)
            elif kind == DROPOUT and l > plan.first_param:
                if dropout is not None:
                    dropout_backward(d, ws.masks[l][:nb], inp, x_act, d_below)
            if extras is not None:
                if extras.max_norm[l] > 0:
                    max_norm_columns(W, extras.max_norm[l], ws.scratch[0][:W.shape[1]])
    return loss_sum, correct, seen


def train_steps_ref(X, y, order, batch_size, step_begin, step_end, epoch, params, state,
                    optimizer, ws, plan, images, sparse, dropout, threaded, extras, norm,
                    augment):
    """The NumPy twin of train_steps: the same step, textbook backprop over the twins, from the
    same arguments."""
    need = _layer_features(plan)
    if (images is None and need & IMAGES) or (sparse is None and need & SPARSE) or (
            dropout is None and need & DROPOUT_LAYERS) or (norm is None and need & NORM):
        raise ValueError(FEATURES_NEEDED)
    features = Features(images, sparse, dropout, threaded, extras, norm, augment)
    from .optim import bias_corrections
    last = len(plan.kind) - 1
    h = state.hyper
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(step_begin, step_end):
        rows = order[step * batch_size:(step + 1) * batch_size]
        nb = rows.shape[0]
        gather_rows_ref(X, rows, ws.xb)
        if augment is not None and len(augment.shape):
            augment_batch_ref(ws.xb[:nb], np.uint64(stream_key(plan.seed, epoch, step, STREAM)),
                              augment.params, augment.basis, augment.shape)
        x = ws.xb[:nb]
        labels = y[rows]

        for l in range(last + 1):
            forward_twin, _ = TWINS[plan.kind[l]]
            forward_twin(l, x if l == 0 else ws.acts[l - 1][:nb], nb, params, plan, features,
                         ws, (epoch, step))

        loss, c = output_loss_ref(plan.loss, ws.acts[last][:nb], labels, ws.deltas[last][:nb])
        if extras is not None and len(extras.sample_weight):
            ws.deltas[last][:nb] *= extras.sample_weight[rows][:, None]
        loss_sum += loss * nb
        correct += c
        seen += nb

        state.t[0] += 1
        state.corr[:] = bias_corrections(optimizer, h, int(state.t[0]))
        c1, c2 = state.corr[0], state.corr[1]
        for l in range(last, plan.first_param - 1, -1):
            _, backward_twin = TWINS[plan.kind[l]]
            d_below = ws.deltas[l - 1][:nb] if l > plan.first_param else ws.deltas[0][:0]
            backward_twin(l, x if l == 0 else ws.acts[l - 1][:nb], ws.deltas[l][:nb], d_below,
                          params, plan, features, ws, state, optimizer, c1, c2)
            if extras is not None and extras.max_norm[l] > 0:
                max_norm_columns_ref(params.W[l], extras.max_norm[l], None)
    return loss_sum, correct, seen

