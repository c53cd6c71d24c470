"""Registers every kernel pair, with a case generator used by the tests and the benches."""
import numpy as np

from . import activations as A
from .augment import (STREAM, augment_batch, augment_batch_ref, augment_params, field_basis,
                      scratch_size)
from .conv import (IN_C, IN_H, IN_W, K_H, K_W, OUT_C, OUT_H, OUT_W, conv_backward,
                   conv_backward_ref, conv_forward, conv_forward_ref, conv_geometry, cols_size,
                   maxpool_backward, maxpool_backward_ref, maxpool_forward, maxpool_forward_ref)
from .batchnorm import (batchnorm_backward, batchnorm_backward_ref, batchnorm_forward,
                        batchnorm_forward_ref, batchnorm_inference, batchnorm_inference_ref)
from .data import gather_rows, gather_rows_ref
from .dense import (THREADED_MIN_WEIGHTS, dense_backward, dense_backward_ref,
                    dense_backward_update, dense_backward_update_ref, dense_forward,
                    dense_forward_ref, dense_forward_threaded, dense_forward_threaded_ref)
from .dropout import (dropout_backward, dropout_backward_ref, dropout_forward, dropout_forward_ref,
                      keep_threshold, stream_key)
from .loss import (SOFTMAX_CE, loss_rule, output_activation, output_activation_ref,
                   output_loss, output_loss_ref)
from .network import (ACTIVATION, BATCHNORM, CONV, DENSE, DROPOUT, POOL, forward, forward_args,
                      forward_ref, make_params, make_plan, make_state, make_workspace, step_args,
                      train_steps, train_steps_ref)
from .optim import (ADAM, N_HYPER, ONE, OPTIMIZER_CODES, TINY, max_norm_columns,
                    max_norm_columns_ref, optimizer_rule, optimizer_update, optimizer_update_ref)
from .registry import register
from .rows import dense_rows_forward, dense_rows_forward_ref
from .sparse_input import (sparse_input_backward_update, sparse_input_backward_update_ref,
                           sparse_input_forward, sparse_input_forward_ref)


def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _sparse_images(rng, n, d, dtype, density=0.2):
    """MNIST-like rows: mostly zeros, the rest in (0, 1]."""
    x = rng.random((n, d))
    x[rng.random((n, d)) > density] = 0
    return x.astype(dtype)


def _activated(rng, shape, dtype, act):
    z = _normal(rng, shape, dtype)
    A.activate_ref(z, act)
    return z


def _hyper(c, nesterov=1, decoupled=0):
    """Every optimizer's hyper-parameters at once, with weight decay on (see optim.LR...)."""
    h = np.zeros(N_HYPER, c.dtype)
    h[:7] = (0.05, 0.9, 0.99, 1e-6, 1e-3, nesterov, decoupled)
    h[ONE] = 1
    h[TINY] = np.finfo(c.dtype).tiny
    return h


def _corrections(c):
    t = np.dtype(c.dtype).type
    return (t(1 - 0.9 ** 3), t(1 - 0.99 ** 3)) if c.optimizer == ADAM else (t(1), t(1))


def _dense_forward_case(rng, c):
    return (_normal(rng, (c.batch, c.n_in), c.dtype), _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1),
            _normal(rng, c.n_out, c.dtype), c.act, np.zeros((c.batch, c.n_out), c.dtype))


def _dense_backward_case(rng, c):
    return (_activated(rng, (c.batch, c.n_in), c.dtype, c.act),
            _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1), _normal(rng, (c.batch, c.n_out), c.dtype),
            c.act, np.zeros((c.n_in, c.n_out), c.dtype), np.zeros(c.n_out, c.dtype),
            np.zeros((c.batch, c.n_in), c.dtype))


def _dense_forward_threaded_case(rng, c):
    """With zero inputs, and 1 to 3 blocks of W's rows (more blocks than rows where n_in < 3)."""
    x, W, b, act, out = _dense_forward_case(rng, c)
    x[rng.random(x.shape) < 0.6] = 0
    return x, W, b, act, out, np.zeros((1 + c.batch % 3, c.batch * c.n_out), c.dtype)


def _dense_backward_update_case(rng, c):
    """dense_backward_update's arguments: a layer below (δ below wanted) unless the batch is odd,
    and state of every optimizer's kind."""
    x, W, d, act, gW, gb, d_below = _dense_backward_case(rng, c)
    if c.batch % 2:
        d_below = d_below[:0]
    state = [np.abs(_normal(rng, a.shape, c.dtype, 0.01)) for a in (W, W, gb, gb)]
    return (x, W, _normal(rng, c.n_out, c.dtype), d, act, gW, gb, d_below, *state,
            optimizer_rule(c.optimizer),
            _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2), *_corrections(c))


def _nonzeros(x):
    n, d = x.shape
    idx = np.zeros((n, d), np.int32)
    val = np.zeros((n, d), x.dtype)
    cnt = np.zeros(n, np.int32)
    for i in range(n):
        (nz,) = np.nonzero(x[i])
        cnt[i] = nz.size
        idx[i, :nz.size] = nz
        val[i, :nz.size] = x[i, nz]
    return idx, val, cnt


def _sparse_forward_case(rng, c):
    X = _sparse_images(rng, 2 * c.batch + 3, c.n_in, c.dtype)
    rows = rng.permutation(X.shape[0])[:c.batch].astype(np.int64)
    return (X, rows, _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1), _normal(rng, c.n_out, c.dtype),
            c.act, np.zeros((c.batch, c.n_out), c.dtype), np.zeros((c.batch, c.n_in), np.int32),
            np.zeros((c.batch, c.n_in), c.dtype), np.zeros(c.batch, np.int32))


def _sparse_backward_case(rng, c):
    import numba
    idx, val, cnt = _nonzeros(_sparse_images(rng, c.batch, c.n_in, c.dtype))
    shape = (c.n_in, c.n_out)
    return (idx, val, cnt, _normal(rng, (c.batch, c.n_out), c.dtype),
            _normal(rng, shape, c.dtype, 0.1), np.abs(_normal(rng, shape, c.dtype, 0.01)),
            np.abs(_normal(rng, shape, c.dtype, 0.01)), optimizer_rule(c.optimizer), _hyper(c),
            *_corrections(c),
            np.zeros(c.n_in + 1, np.int64), np.zeros(c.batch * c.n_in, np.int32),
            np.zeros(c.batch * c.n_in, c.dtype), np.zeros((1, c.n_in), np.int64),
            np.zeros((numba.get_num_threads(), c.n_out), c.dtype))


def _loss_case(rng, c):
    logits = _normal(rng, (c.batch, c.n_out), c.dtype, 3.0)
    # a plain code; or the loss's rule, softmax + cross-entropy's with label smoothing
    code = c.loss if c.sparse_input else loss_rule(c.loss, smoothing=_smoothing(c))
    return (code, logits, rng.integers(0, c.n_out, c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_out), c.dtype))


def _smoothing(c):
    """The label smoothing of a case's softmax + cross-entropy: 0.1 in the cases without a
    zero-skipping layer, none in the others."""
    return 0.1 if c.loss == SOFTMAX_CE and not c.sparse_input else 0.0


def _output_activation_case(rng, c):
    return (c.loss, _normal(rng, (c.batch, c.n_out), c.dtype, 3.0),
            np.zeros((c.batch, c.n_out), c.dtype))


def _optimizer_case(rng, c, decay=True):
    shape = (c.n_in, c.n_out)
    # state slots are non-negative: RMSprop's and Adagrad's hold squares
    return (optimizer_rule(c.optimizer), _normal(rng, shape, c.dtype),
            _normal(rng, shape, c.dtype, 0.1),
            np.abs(_normal(rng, shape, c.dtype, 0.1)), np.abs(_normal(rng, shape, c.dtype, 0.1)),
            _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2), *_corrections(c), decay)


def _max_norm_case(rng, c):
    t = np.dtype(c.dtype).type
    # the limit is about the median column norm: some columns are rescaled, some are not
    return (_normal(rng, (c.n_in, c.n_out), c.dtype, 0.2), t(0.2 * np.sqrt(c.n_in)),
            np.zeros(c.n_out, c.dtype))


def _gather_case(rng, c):
    X = _normal(rng, (3 * c.batch + 1, c.n_in), c.dtype)
    return (X, rng.integers(0, X.shape[0], c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_in), c.dtype))


def _rows_forward_case(rng, c):
    """A batch of rows through n_in -> n_out (act) -> 10 -> 10 (identity): mostly-zero rows
    when the case is sparse, dense ones else."""
    X = (_sparse_images(rng, c.batch, c.n_in, c.dtype) if c.sparse_input
         else _normal(rng, (c.batch, c.n_in), c.dtype))
    shapes = [(c.n_in, c.n_out), (c.n_out, 10), (10, 10)]
    Ws = tuple(_normal(rng, s, c.dtype, 1 / np.sqrt(s[0])) for s in shapes)
    bs = tuple(_normal(rng, s[1], c.dtype, 0.1) for s in shapes)
    acts = np.array([c.act, c.act, A.IDENTITY], np.int64)
    return (X, Ws, bs, acts, np.zeros((c.batch, 10), c.dtype), 3)  # more blocks than threads


def _rows_flops(c):
    return 2 * c.batch * (c.n_in * c.n_out + c.n_out * 10 + 100)


def _activate_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype, 3.0), c.act)


def _derivative_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype),
            _activated(rng, (c.batch, c.n_out), c.dtype, c.act), c.act)


def _dropout_forward_case(rng, c):
    t = np.dtype(c.dtype).type
    return (_normal(rng, (c.batch, c.n_out), c.dtype), np.uint64(stream_key(7, 2, c.batch, 1)),
            keep_threshold(0.3), t(1 / 0.7), np.zeros((c.batch, c.n_out), c.dtype),
            np.zeros((c.batch, c.n_out), c.dtype))


def _dropout_backward_case(rng, c):
    mask = np.where(rng.random((c.batch, c.n_out)) < 0.5, 2.0, 0.0).astype(c.dtype)
    return (_normal(rng, (c.batch, c.n_out), c.dtype), mask,
            _activated(rng, (c.batch, c.n_out), c.dtype, c.act), c.act,
            np.zeros((c.batch, c.n_out), c.dtype))


# ---- whole networks: two hidden layers and a dropout layer -----------------------------------
CASE_SLOTS = 8  # the per-layer tables' length in the whole-network cases


def network_case(rng, c, batch_size=None, input_dropout=True):
    """(Params, Plan) of n_in -> n_out -> n_out/2 -> 10 with one dropout layer, before the first
    dense layer (``input_dropout``) or between the first two, plus the workspace for batch_size
    rows. The tables have 8 entries, as the convolutional case's (``cnn_case``): the step is
    compiled for the length of its tables, and every case of either network shares one
    compilation per dtype (fits compile theirs for the power of two at their depth)."""
    sizes = (c.n_in, c.n_out, max(c.n_out // 2, 3), 10)
    kinds, acts, rates, W, b = [], [], [], [], []
    empty2, empty1 = np.zeros((0, 0), c.dtype), np.zeros(0, c.dtype)
    for l, (a, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        if l == (0 if input_dropout else 1):
            kinds.append(DROPOUT), acts.append(0), rates.append(0.2 if l == 0 else 0.5)
            W.append(empty2), b.append(empty1)
        kinds.append(DENSE), acts.append(c.act if l < 2 else 0), rates.append(0.0)
        W.append(_normal(rng, (a, m), c.dtype, 1 / np.sqrt(a))), b.append(_normal(rng, m, c.dtype, 0.1))
    second_last_dense = [i for i, k in enumerate(kinds) if k == DENSE][-2]
    max_norms = [3.0 if i == second_last_dense else 0.0 for i in range(len(kinds))]
    # without the zero-skipping layer, every dense layer runs on threads, however small
    plan = make_plan(kinds, acts, rates, max_norms,
                     loss_rule(c.loss, any_code=True, smoothing=_smoothing(c)),
                     c.sparse_input, 11, c.dtype,
                     threaded_min=THREADED_MIN_WEIGHTS if c.sparse_input else 0)
    params = make_params(W, b, c.dtype, slots=CASE_SLOTS)
    ws = make_workspace(params, plan, c.n_in, batch_size or c.batch, c.dtype)
    return params, plan, ws


def _forward_case(rng, c):
    params, plan, _ = network_case(rng, c, input_dropout=not c.sparse_input)
    if c.sparse_input:
        plan = plan._replace(sparse_layer=plan.first_param)
    ws = make_workspace(params, plan, c.n_in, c.batch, c.dtype, training=False)
    X = _sparse_images(rng, 2 * c.batch + 3, c.n_in, c.dtype)
    rows = rng.permutation(X.shape[0])[:c.batch].astype(np.int64)
    layers, *codes = forward_args(plan, full=True)
    return (X, rows, params, layers, ws, *codes)


def _train_steps_case(rng, c):
    """Three steps, the last one ragged, from a state that has already taken steps. The
    optimizer's rule holds every optimizer's update (``any_code``): the cases sweep the
    optimizers, and one compiled step per dtype runs them all, through the same per-optimizer
    loops that a fit's step compiles alone (``optim.update_span``)."""
    params, plan, ws = network_case(rng, c, input_dropout=c.batch % 2 == 1)
    h = _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2)
    state = make_state(params, h[:7], c.dtype)
    for s in state.s1W + state.s1b + state.s2W + state.s2b:
        s[...] = np.abs(_normal(rng, s.shape, c.dtype, 0.01))
    state.t[0] = 5
    n = 2 * c.batch + max(c.batch // 2, 1)
    X = _sparse_images(rng, n, c.n_in, c.dtype)
    y = rng.integers(0, 10, n).astype(np.int64)
    if c.batch % 2 == 0:  # weighted samples
        plan = plan._replace(sample_weight=(2 * rng.random(n)).astype(c.dtype))
    if c.act == A.TANH:  # distorted images (the inputs as one row of pixels: any shape works)
        params_aug = augment_params(1.5, np.radians(10), 0.1, 4.0, nearest=c.batch % 3 == 1)
        # σ grows with the row: a field costs ~r²·n with r ≈ n/σ basis vectors (augment.py)
        plan = plan._replace(aug=params_aug,
                             aug_basis=field_basis(1, c.n_in, max(1.5, c.n_in / 16),
                                                   4.0).astype(c.dtype),
                             aug_shape=np.array([1, c.n_in, 1], np.int64))
        ws = make_workspace(params, plan, c.n_in, c.batch, c.dtype)
    return (X, y, rng.permutation(n).astype(np.int64), c.batch, 0, 3, 4, params, state,
            optimizer_rule(c.optimizer, any_code=True), ws,
            *step_args(params, plan, full=True))


# ---- convolution and pooling: odd shapes from the case's numbers -----------------------------
def conv_case_geometry(c):
    """MNIST's first conv layer at n_in = 784; else a small image whose channels, kernel, stride
    and padding vary with the case (rectangular and even kernels, stride 2, same and valid)."""
    if c.n_in == 784:
        return conv_geometry((28, 28, 1), min(c.n_out, 32), (5, 5), 1, "same")
    side = 5 + c.n_in % 9
    kernel = ((2, 3), (3, 3), (5, 4), (3, 1))[c.act % 4]
    return conv_geometry((side, side + 1, 1 + c.batch % 3), 1 + c.n_out % 7, kernel,
                         1 + c.batch % 2, "same" if c.sparse_input else "valid")


def pool_case_geometry(c):
    if c.n_in == 784:
        return conv_geometry((28, 28, min(c.n_out, 32)), None, (2, 2), 2, "valid")
    size = 2 + c.act % 2
    return conv_geometry((5 + c.n_in % 9, 6 + c.n_out % 5, 1 + c.batch % 3), None, (size, size),
                         size if c.sparse_input else 1, "valid")


def _image_size(g):
    return int(g[IN_H] * g[IN_W] * g[IN_C]), int(g[OUT_H] * g[OUT_W] * g[OUT_C])


def _conv_forward_case(rng, c):
    g = conv_case_geometry(c)
    n_in, n_out = _image_size(g)
    fan_in = int(g[K_H] * g[K_W] * g[IN_C])
    x = _sparse_images(rng, c.batch, n_in, c.dtype, density=0.5)
    return (x, _normal(rng, (fan_in, g[OUT_C]), c.dtype, 1 / np.sqrt(fan_in)),
            _normal(rng, g[OUT_C], c.dtype, 0.1), c.act, g, np.zeros((c.batch, n_out), c.dtype),
            _cols(g, c))


def _cols(g, c):
    import numba
    return np.zeros((numba.get_num_threads(), cols_size(g)), c.dtype)


def _conv_backward_case(rng, c):
    import numba
    g = conv_case_geometry(c)
    n_in, n_out = _image_size(g)
    fan_in = int(g[K_H] * g[K_W] * g[IN_C])
    d = _normal(rng, (c.batch, n_out), c.dtype)
    d[rng.random(d.shape) < 0.5] = 0  # as after ReLU and pooling
    # identity: the first layer's case, whose input needs no gradient
    dx_rows = 0 if c.act == A.IDENTITY else c.batch
    return (_activated(rng, (c.batch, n_in), c.dtype, c.act),
            _normal(rng, (fan_in, g[OUT_C]), c.dtype, 1 / np.sqrt(fan_in)), d, c.act, g,
            np.zeros((fan_in, g[OUT_C]), c.dtype), np.zeros(g[OUT_C], c.dtype),
            np.zeros((dx_rows, n_in), c.dtype),
            np.zeros((numba.get_num_threads(), fan_in * g[OUT_C] + g[OUT_C]), c.dtype),
            _cols(g, c))


def _maxpool_forward_case(rng, c):
    g = pool_case_geometry(c)
    n_in, n_out = _image_size(g)
    # after ReLU, many windows hold ties (zeros): both sides must pick the same winner
    return (_activated(rng, (c.batch, n_in), c.dtype, c.act), g,
            np.zeros((c.batch, n_out), c.dtype), np.zeros((c.batch, n_out), np.int32))


def _maxpool_backward_case(rng, c):
    x, g, out, arg = _maxpool_forward_case(rng, c)
    maxpool_forward_ref(x, g, out, arg)
    return (_normal(rng, out.shape, c.dtype), arg, np.zeros_like(x))


def cnn_case(rng, c, batch_size=None):
    """(Params, Plan, Workspace, input size) of conv -> batch normalization (per channel) ->
    activation -> pool -> dropout -> conv -> batch normalization (per feature of the flat
    output) -> dense(10) on the case's image (conv_case_geometry). The first conv is linear,
    as before a normalization in Keras, the second a smooth activation. (Not a ReLU: a feature
    it nearly switches off has a tiny variance, by which the normalization divides the two
    sides' last-bit differences until they show; the kernel pairs' cases cover a ReLU below a
    normalization.)"""
    g1 = conv_case_geometry(c).copy()
    g1[OUT_C] = 12  # the second conv then sees enough inputs per tap to run as sgemm
    shape1 = (int(g1[OUT_H]), int(g1[OUT_W]), int(g1[OUT_C]))
    size = 2 if min(shape1[:2]) >= 2 else 1
    gp = conv_geometry(shape1, None, (size, size), size, "valid")
    kernel = (min(3, int(gp[OUT_H])), min(2, int(gp[OUT_W])))
    g2 = conv_geometry((int(gp[OUT_H]), int(gp[OUT_W]), int(gp[OUT_C])), 4, kernel, 1,
                       "same" if c.sparse_input else "valid")
    kinds = [CONV, BATCHNORM, ACTIVATION, POOL, DROPOUT, CONV, BATCHNORM, DENSE]
    geoms = [g1, None, None, gp, None, g2, None, None]
    widths = [_image_size(g)[1] for g in (g1, g1, g1, gp, gp, g2, g2)] + [10]
    W, b = [], []
    empty2, empty1 = np.zeros((0, 0), c.dtype), np.zeros(0, c.dtype)
    for kind, g in zip(kinds, geoms):
        if kind == CONV:
            fan_in = int(g[K_H] * g[K_W] * g[IN_C])
            W.append(_normal(rng, (fan_in, g[OUT_C]), c.dtype, 1 / np.sqrt(fan_in)))
            b.append(_normal(rng, g[OUT_C], c.dtype, 0.1))
        elif kind == DENSE:
            W.append(_normal(rng, (widths[6], 10), c.dtype, 1 / np.sqrt(widths[6])))
            b.append(_normal(rng, 10, c.dtype, 0.1))
        elif kind == BATCHNORM:
            channels = int(g1[OUT_C]) if len(W) == 1 else widths[5]
            W.append(norm_table(rng, channels, c.dtype))
            b.append(_normal(rng, channels, c.dtype, 0.1))
        else:
            W.append(empty2), b.append(empty1)
    act = c.act if c.act != A.IDENTITY else A.TANH
    # (the conv below a normalization never a ReLU, see above)
    plan = make_plan(kinds, [A.IDENTITY, 0, act, 0, 0, A.TANH if act == A.RELU else act, 0, 0], [0, 0, 0, 0, 0.25, 0, 0, 0],
                     [0, 0, 0, 0, 0, 2.0, 0, 0], loss_rule(c.loss, any_code=True), False, 5, c.dtype,
                     widths=widths, geoms=geoms, norms=[None, (0.9, 1e-3)] + [None] * 4
                     + [(0.99, 1e-5), None])
    params = make_params(W, b, c.dtype, slots=CASE_SLOTS)
    n_in = _image_size(g1)[0]
    return params, plan, make_workspace(params, plan, n_in, batch_size or c.batch, c.dtype), n_in


def norm_table(rng, channels, dtype):
    """A batch normalization layer's W: γ near 1, a moving mean and a moving variance."""
    return np.stack([1 + _normal(rng, channels, np.float64, 0.2), _normal(rng, channels, np.float64),
                     0.5 + rng.random(channels)]).astype(dtype)


def _norm_input(rng, c):
    """(rows, channels): the conv layer's output on the case's image, or a dense layer's."""
    if c.sparse_input:
        g = conv_case_geometry(c)
        return _normal(rng, (c.batch * int(g[OUT_H] * g[OUT_W]), int(g[OUT_C])), c.dtype, 2) + 1
    return _normal(rng, (c.batch, c.n_out), c.dtype, 2) + 1


def _norm_buffers(c, channels, training=True):
    import numba
    return (np.zeros((4 if training else 0, channels)),
            np.zeros((numba.get_num_threads(), 2 * channels)))


def _batchnorm_forward_case(rng, c):
    x = _norm_input(rng, c)
    channels = x.shape[1]
    stats, sums = _norm_buffers(c, channels)
    return (x, norm_table(rng, channels, c.dtype), _normal(rng, channels, c.dtype, 0.1),
            np.array([0.9 if c.batch % 2 else 0.99, 1e-3]), stats, sums, np.zeros_like(x))


def _batchnorm_backward_case(rng, c):
    x = _norm_input(rng, c)
    if c.act != A.IDENTITY:
        A.activate_ref(x, c.act)
    channels = x.shape[1]
    W = norm_table(rng, channels, c.dtype)
    stats, sums = _norm_buffers(c, channels)
    batchnorm_forward_ref(x, W, _normal(rng, channels, c.dtype), np.array([0.9, 1e-3]), stats,
                          sums, np.zeros_like(x))
    dx = np.zeros_like(x) if c.batch % 3 else x[:0].copy()  # no layer below learns
    return (x, _normal(rng, x.shape, c.dtype), W, c.act, stats, sums, np.zeros_like(W),
            np.zeros(channels, c.dtype), dx)


def _batchnorm_inference_case(rng, c):
    x = _norm_input(rng, c)
    channels = x.shape[1]
    return (x, norm_table(rng, channels, c.dtype), _normal(rng, channels, c.dtype, 0.1), 1e-3,
            np.zeros_like(x))


def _cnn_train_steps_case(rng, c):
    """Three steps, the last one ragged, from a state that has already taken steps."""
    params, plan, ws, n_in = cnn_case(rng, c)
    h = _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2)
    state = make_state(params, h[:7], c.dtype)
    for s in state.s1W + state.s1b + state.s2W + state.s2b:
        s[...] = np.abs(_normal(rng, s.shape, c.dtype, 0.01))
    state.t[0] = 2
    n = 2 * c.batch + max(c.batch // 2, 1)
    X = _sparse_images(rng, n, n_in, c.dtype, density=0.5)
    y = rng.integers(0, 10, n).astype(np.int64)
    return (X, y, rng.permutation(n).astype(np.int64), c.batch, 0, 3, 1, params, state,
            optimizer_rule(c.optimizer, any_code=True), ws,
            *step_args(params, plan, full=True))


def _cnn_forward_case(rng, c):
    params, plan, _, n_in = cnn_case(rng, c)
    ws = make_workspace(params, plan, n_in, c.batch, c.dtype, training=False)
    X = _sparse_images(rng, 2 * c.batch + 3, n_in, c.dtype, density=0.5)
    layers, *codes = forward_args(plan, full=True)
    return (X, rng.permutation(X.shape[0])[:c.batch].astype(np.int64), params, layers, ws,
            *codes)


def _conv_flops(c):
    g = conv_case_geometry(c)
    return int(2 * c.batch * g[OUT_H] * g[OUT_W] * g[OUT_C] * g[K_H] * g[K_W] * g[IN_C])


def _augment_case(rng, c):
    """Images of the case's shape (28x28 at n_in = 784), every distortion on, elastic with σ
    from the activation code (0: none), resampled bilinearly or (odd n_out, several images:
    one small image may map back onto itself) nearest."""
    import numba
    shape = (28, 28, 1) if c.n_in == 784 else (4 + c.n_in % 5, 3 + c.n_out % 6, 1 + c.batch % 3)
    x = _sparse_images(rng, c.batch, int(np.prod(shape)), c.dtype, density=0.5)
    sigma = (0.0, 4.0, 1.0, 2.5)[c.act]
    alpha = 6.0 if sigma else 0.0
    params = augment_params(2.0, np.radians(12), 0.15, alpha,
                            nearest=c.n_out % 2 == 1 and c.batch > 1)
    basis = field_basis(shape[0], shape[1], sigma, alpha).astype(c.dtype)
    return (x, np.uint64(stream_key(3, c.batch, 7, STREAM)), params, basis,
            np.array(shape, np.int64), np.zeros((numba.get_num_threads(),
                                                 scratch_size(*shape, basis.shape[0])), c.dtype))


def _mlp_flops(c):
    return 2 * c.batch * c.n_in * c.n_out


OPTIMIZERS = ("optimizer",)
LOSSES = ("loss",)
register("activate", fast=A.activate, reference=A.activate_ref, make_case=_activate_case,
         outputs=("z",))
register("derivative_mul", fast=A.derivative_mul, reference=A.derivative_mul_ref,
         make_case=_derivative_case, outputs=("delta",))
register("dense_forward", fast=dense_forward, reference=dense_forward_ref,
         make_case=_dense_forward_case, outputs=("out",), flops=_mlp_flops)
register("dense_backward", fast=dense_backward, reference=dense_backward_ref,
         make_case=_dense_backward_case, outputs=("dW", "db", "delta_prev"),
         flops=lambda c: 2 * _mlp_flops(c))
register("dense_forward_threaded", fast=dense_forward_threaded,
         reference=dense_forward_threaded_ref,
         make_case=_dense_forward_threaded_case,
         outputs=("out",), flops=_mlp_flops, parallel=True)
register("dense_backward_update", fast=dense_backward_update,
         reference=dense_backward_update_ref, make_case=_dense_backward_update_case,
         outputs=("W", "b", "gb", "delta_prev", "S1", "S2", "s1b", "s2b"),
         flops=lambda c: 2 * _mlp_flops(c), variants=OPTIMIZERS, parallel=True)
register("sparse_input_forward", fast=sparse_input_forward, reference=sparse_input_forward_ref,
         make_case=_sparse_forward_case, outputs=("out", "nz_idx", "nz_val", "nz_cnt"),
         flops=_mlp_flops, parallel=True)
register("sparse_input_backward_update", fast=sparse_input_backward_update,
         reference=sparse_input_backward_update_ref, make_case=_sparse_backward_case,
         outputs=("W", "S1", "S2"), flops=_mlp_flops, variants=OPTIMIZERS, parallel=True)
register("dense_rows_forward", fast=dense_rows_forward, reference=dense_rows_forward_ref,
         make_case=_rows_forward_case, outputs=("out",), flops=_rows_flops, parallel=True)
register("output_loss", fast=output_loss, reference=output_loss_ref, make_case=_loss_case,
         outputs=("dlogits",), compares_return=True, variants=LOSSES, output_layer=True)
register("output_activation", fast=output_activation, reference=output_activation_ref,
         make_case=_output_activation_case, outputs=("out",), variants=LOSSES, output_layer=True)
register("optimizer_update", fast=optimizer_update, reference=optimizer_update_ref,
         make_case=_optimizer_case, outputs=("w", "s1", "s2"), variants=OPTIMIZERS)
register("max_norm_columns", fast=max_norm_columns, reference=max_norm_columns_ref,
         make_case=_max_norm_case, outputs=("W",))
register("dropout_forward", fast=dropout_forward, reference=dropout_forward_ref,
         make_case=_dropout_forward_case, outputs=("mask", "out"))
register("dropout_backward", fast=dropout_backward, reference=dropout_backward_ref,
         make_case=_dropout_backward_case, outputs=("delta_in",))
register("augment_batch", fast=augment_batch, reference=augment_batch_ref,
         make_case=_augment_case, outputs=("x",), parallel=True)
register("gather_rows", fast=gather_rows, reference=gather_rows_ref, make_case=_gather_case,
         outputs=("out",))
register("forward", fast=forward, reference=forward_ref, make_case=_forward_case,
         outputs=("ws.acts",), parallel=True)
register("conv_forward", fast=conv_forward, reference=conv_forward_ref,
         make_case=_conv_forward_case, outputs=("out",), flops=_conv_flops, parallel=True)
register("conv_backward", fast=conv_backward, reference=conv_backward_ref,
         make_case=_conv_backward_case, outputs=("dW", "db", "dx"),
         flops=lambda c: 2 * _conv_flops(c), parallel=True)
register("maxpool_forward", fast=maxpool_forward, reference=maxpool_forward_ref,
         make_case=_maxpool_forward_case, outputs=("out", "arg"), parallel=True)
register("maxpool_backward", fast=maxpool_backward, reference=maxpool_backward_ref,
         make_case=_maxpool_backward_case, outputs=("dx",), parallel=True)
register("batchnorm_forward", fast=batchnorm_forward, reference=batchnorm_forward_ref,
         make_case=_batchnorm_forward_case, outputs=("W", "stats", "out"), parallel=True)
register("batchnorm_backward", fast=batchnorm_backward, reference=batchnorm_backward_ref,
         make_case=_batchnorm_backward_case, outputs=("stats", "gW", "gb", "dx"), parallel=True)
register("batchnorm_inference", fast=batchnorm_inference, reference=batchnorm_inference_ref,
         make_case=_batchnorm_inference_case, outputs=("out",), parallel=True)
register("forward_cnn", fast=forward, reference=forward_ref, make_case=_cnn_forward_case,
         outputs=("ws.acts", "ws.argmax"), parallel=True)
# Its batch normalizations divide by minibatches' standard deviations (of 3 rows, in a ragged
# step), and RMSprop by its gradients' running RMS: the twin itself moves its weights by up to
# 3e-11 when its input changes by 1e-15 (relative); the kernel stays within 3x of that.
register("train_steps_cnn", fast=train_steps, reference=train_steps_ref,
         make_case=_cnn_train_steps_case, outputs=("params", "state"), compares_return=True,
         variants=OPTIMIZERS + LOSSES, parallel=True, conditioning=100.0)
register("train_steps", fast=train_steps, reference=train_steps_ref, make_case=_train_steps_case,
         outputs=("params", "state"), compares_return=True, variants=OPTIMIZERS + LOSSES,
         parallel=True)

assert set(OPTIMIZER_CODES.values()) == {0, 1, 2, 3}
