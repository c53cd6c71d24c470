"""The optimizer table: one fused, in-place update per optimizer, chosen by its rule's type.

Every optimizer updates a parameter w from its gradient g and two state slots s1, s2 (unused
slots are simply not touched), with hyper-parameters in one small array ``h`` of the
parameter's dtype. g is the mean minibatch gradient; ``decay`` is False for biases, which
never get weight decay. Formulas are PyTorch's (see fastmlp/optimizers.py):

- SGD:     g += λw;  v = μv + g;  w -= lr·(g + μv) (Nesterov) or lr·v
- Adam:    g += λw (or, decoupled, w *= 1 - lr·λ);  m = β1 m + (1-β1) g;  s = β2 s + (1-β2) g²;
           w -= lr · (m / c1) / (√(s / c2) + ε),  c1 = 1 - β1ᵗ, c2 = 1 - β2ᵗ
- RMSprop: g += λw;  s = ρs + (1-ρ) g²;  w -= lr · g / (√s + ε)
- Adagrad: g += λw;  s += g²;  w -= lr · g / (√s + ε)
"""
from collections import namedtuple

import numpy as np
from numba import njit
from numba.extending import overload

SGD, ADAM, RMSPROP, ADAGRAD = 0, 1, 2, 3
OPTIMIZER_CODES = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD}
# positions in the hyper-parameter array h (BETA1 is SGD's momentum, BETA2 RMSprop's rho)
# ONE holds 1: Numba promotes float32 mixed with an integer literal to float64, which would
# halve the vector width of every update loop. TINY holds the dtype's smallest normal number:
# state values below it in magnitude are stored as zero (see update_span).
LR, BETA1, BETA2, EPS, WEIGHT_DECAY, NESTEROV, DECOUPLED, ONE, TINY = range(9)
N_HYPER = 9

# The kernels take the optimizer as a *rule*: a one-field namedtuple (its ``code``) whose class
# decides, while Numba types a kernel, which update loops it compiles. SGD — the default, and
# most fits' — compiles its loop alone. The three adaptive optimizers share one compiled step,
# chosen among by the code at run time: one step per optimizer made the test suite, which fits
# the same networks with each, compile 2-3x as long (tests/test_optimizers.py: 142 s -> 307 s
# from an empty cache) for about a second of one fit's cold start. ``AnyRule`` compiles all four
# (the pair tests sweep the optimizers through one compiled step).
SGDRule = namedtuple("SGDRule", "code", defaults=(SGD,))
AdaptiveRule = namedtuple("AdaptiveRule", "code")
AnyRule = namedtuple("AnyRule", "code")
N_OPTIMIZERS = 4


def optimizer_rule(code, any_code=False):
    """The rule of optimizer ``code``; ``any_code``: the rule that compiles every optimizer."""
    code = int(code)
    if code not in range(N_OPTIMIZERS):
        raise ValueError(f"optimizer code must be one of 0..{N_OPTIMIZERS - 1}, got {code}")
    if any_code:
        return AnyRule(code)
    return SGDRule() if code == SGD else AdaptiveRule(code)


def bias_corrections(rule, h, t):
    """(c1, c2) of step t (from 1), in float64: Adam's 1 - β1ᵗ and 1 - β2ᵗ, else (1, 1)."""
    if rule.code != ADAM:
        return 1.0, 1.0
    return 1.0 - float(h[BETA1]) ** t, 1.0 - float(h[BETA2]) ** t


def update_span(rule, w, g, s1, s2, h, c1, c2, decay):
    """One step of the optimizer ``rule`` on the 1-D spans w, g, s1, s2 (same length).

    Inlined, it takes its caller's error model. Adam, RMSprop and Adagrad divide, and under
    Numba's default (Python) model each division first tests its divisor, which keeps LLVM from
    vectorising the loop (Adam on 1024x1024 weights: 3.9 ms instead of 1.3). So every caller
    compiles with error_model="numpy" (a division by zero gives inf or nan, as in the twin);
    Numba's parallel bodies always do.

    State that decays (a velocity or moment whose gradient stays zero for a while) is stored as
    zero once it falls below ``h[TINY]``, the smallest normal number: denormal operands cost
    Intel cores a microcode assist each (after one batch-10 epoch on MNIST, 54 % of the first
    layer's velocities were denormal). ``abs(v) < tiny`` is False for NaN, which stays."""
    raise TypeError("update_span runs inside compiled kernels only")


@njit(inline="always")
def _span_constants(w, h, decay):
    """(n, lr, one, zero, tiny, weight decay) of an update: in h's dtype, as the loops need
    (see ONE)."""
    one = h[ONE]
    zero = one - one
    return w.shape[0], h[LR], one, zero, h[TINY], h[WEIGHT_DECAY] if decay else zero


def _sgd_span(rule, w, g, s1, s2, h, c1, c2, decay):
    n, lr, one, zero, tiny, wd = _span_constants(w, h, decay)
    mu = h[BETA1]
    if h[NESTEROV] != 0:
        for i in range(n):
            gi = g[i] + wd * w[i]
            v = mu * s1[i] + gi
            v = zero if abs(v) < tiny else v
            s1[i] = v
            w[i] -= lr * (gi + mu * v)
    elif wd == 0:
        for i in range(n):
            v = mu * s1[i] + g[i]
            v = zero if abs(v) < tiny else v
            s1[i] = v
            w[i] -= lr * v
    else:
        for i in range(n):
            v = mu * s1[i] + g[i] + wd * w[i]
            v = zero if abs(v) < tiny else v
            s1[i] = v
            w[i] -= lr * v


@njit(inline="always")
def gemm_makes_velocity(rule, h):
    """Whether a weight gradient made by BLAS can be made straight into SGD's velocity, v <- μv
    + xᵀδ (gemm's beta = μ), sparing the gradient's buffer a write and a read: SGD without
    Nesterov, whose update then needs v only (momentum_step)."""
    return rule.code == SGD and h[NESTEROV] == 0


@njit(inline="always")
def momentum_step(w, v, h, decay):
    """SGD's update (without Nesterov) of w where v holds μv + g already: v += λw, flushed as
    in update_span, then w -= lr·v."""
    n, lr, one, zero, tiny, wd = _span_constants(w, h, decay)
    for i in range(n):
        vi = v[i] + wd * w[i]
        vi = zero if abs(vi) < tiny else vi
        v[i] = vi
        w[i] -= lr * vi


def _adam_span(rule, w, g, s1, s2, h, c1, c2, decay):
    n, lr, one, zero, tiny, wd = _span_constants(w, h, decay)
    b1, b2, eps = h[BETA1], h[BETA2], h[EPS]
    shrink, l2 = one, wd
    if h[DECOUPLED] != 0:
        shrink, l2 = one - lr * wd, zero
    step = lr / c1
    inv_sqrt_c2 = one / np.sqrt(c2)
    for i in range(n):
        gi = g[i] + l2 * w[i]
        m = b1 * s1[i] + (one - b1) * gi
        m = zero if abs(m) < tiny else m
        s = b2 * s2[i] + (one - b2) * gi * gi
        s = zero if s < tiny else s
        s1[i] = m
        s2[i] = s
        w[i] = w[i] * shrink - step * m / (np.sqrt(s) * inv_sqrt_c2 + eps)


def _rmsprop_span(rule, w, g, s1, s2, h, c1, c2, decay):
    n, lr, one, zero, tiny, wd = _span_constants(w, h, decay)
    rho, eps = h[BETA2], h[EPS]
    one_minus_rho = one - rho
    for i in range(n):
        gi = g[i] + wd * w[i]
        s = rho * s1[i] + one_minus_rho * gi * gi
        s = zero if s < tiny else s
        s1[i] = s
        w[i] -= lr * gi / (np.sqrt(s) + eps)


def _adagrad_span(rule, w, g, s1, s2, h, c1, c2, decay):
    n, lr, one, zero, tiny, wd = _span_constants(w, h, decay)
    eps = h[EPS]
    for i in range(n):
        gi = g[i] + wd * w[i]
        s = s1[i] + gi * gi
        s = zero if s < tiny else s
        s1[i] = s
        w[i] -= lr * gi / (np.sqrt(s) + eps)


# Inlined where they are called (taking the caller's error model): a call per row of the
# zero-skipping layer's update to a loop compiled apart made that kernel 1.2x slower at batch 64.
_sgd, _adam, _rmsprop, _adagrad = (njit(inline="always")(f) for f in
                                    (_sgd_span, _adam_span, _rmsprop_span, _adagrad_span))


def _sgd_call(rule, w, g, s1, s2, h, c1, c2, decay):
    _sgd(rule, w, g, s1, s2, h, c1, c2, decay)


def _adaptive_call(rule, w, g, s1, s2, h, c1, c2, decay):
    if rule.code == ADAM:
        _adam(rule, w, g, s1, s2, h, c1, c2, decay)
    elif rule.code == RMSPROP:
        _rmsprop(rule, w, g, s1, s2, h, c1, c2, decay)
    else:
        _adagrad(rule, w, g, s1, s2, h, c1, c2, decay)


_adaptive = njit(inline="always")(_adaptive_call)


def _any_call(rule, w, g, s1, s2, h, c1, c2, decay):
    if rule.code == SGD:
        _sgd(rule, w, g, s1, s2, h, c1, c2, decay)
    else:
        _adaptive(rule, w, g, s1, s2, h, c1, c2, decay)


_CALLS = {SGDRule: _sgd_call, AdaptiveRule: _adaptive_call, AnyRule: _any_call}


@overload(update_span, inline="always")
def _update_span_for(rule, w, g, s1, s2, h, c1, c2, decay):
    """The rule's loops, chosen while typing: the others are never compiled."""
    return _CALLS[rule.instance_class]


@njit(cache=True, error_model="numpy")  # see update_span
def optimizer_update(rule, w, g, s1, s2, h, c1, c2, decay):
    """In place, on arrays of any shape (C-contiguous): w, s1, s2 <- one step of the optimizer
    ``rule``."""
    update_span(rule, w.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1), h, c1, c2,
                decay)


def _flush_denormals(s, tiny):
    s[np.abs(s) < tiny] = 0


def optimizer_update_ref(rule, w, g, s1, s2, h, c1, c2, decay):
    code = rule.code
    lr, wd, tiny = h[LR], (h[WEIGHT_DECAY] if decay else 0), h[TINY]
    if code == SGD:
        g = g + wd * w
        s1 *= h[BETA1]
        s1 += g
        _flush_denormals(s1, tiny)
        w -= lr * (g + h[BETA1] * s1) if h[NESTEROV] else lr * s1
    elif code == ADAM:
        if h[DECOUPLED]:
            w *= 1 - lr * wd
        else:
            g = g + wd * w
        s1[...] = h[BETA1] * s1 + (1 - h[BETA1]) * g
        s2[...] = h[BETA2] * s2 + (1 - h[BETA2]) * g * g
        _flush_denormals(s1, tiny)
        _flush_denormals(s2, tiny)
        w -= lr * (s1 / c1) / (np.sqrt(s2 / c2) + h[EPS])
    elif code == RMSPROP:
        g = g + wd * w
        s1[...] = h[BETA2] * s1 + (1 - h[BETA2]) * g * g
        _flush_denormals(s1, tiny)
        w -= lr * g / (np.sqrt(s1) + h[EPS])
    else:
        g = g + wd * w
        s1 += g * g
        _flush_denormals(s1, tiny)
        w -= lr * g / (np.sqrt(s1) + h[EPS])


@njit(cache=True)
def max_norm_columns(W, limit, norms):
    """Rescale each column of W (a unit's incoming weights) whose L2 norm exceeds limit;
    norms (W.shape[1],) is scratch."""
    n_in, n_out = W.shape
    for j in range(n_out):
        norms[j] = 0
    for i in range(n_in):
        for j in range(n_out):
            norms[j] += W[i, j] * W[i, j]
    for j in range(n_out):
        norm = np.sqrt(norms[j])
        norms[j] = limit / norm if norm > limit else norms[j] * 0 + 1
    for i in range(n_in):
        for j in range(n_out):
            W[i, j] *= norms[j]


def max_norm_columns_ref(W, limit, norms):
    norm = np.sqrt((W * W).sum(axis=0))
    W *= np.where(norm > limit, limit / np.maximum(norm, np.finfo(W.dtype).tiny), 1)
