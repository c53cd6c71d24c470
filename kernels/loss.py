"""Fused softmax + cross-entropy (with label smoothing): loss and dlogits in one pass, no one-hot
matrix; the other output/loss pairs."""
from collections import namedtuple

import numpy as np
from numba import njit
from numba.extending import overload


@njit(cache=True)
def softmax_cross_entropy(logits, labels, dlogits, smoothing=0.0):
    """Mean cross-entropy of softmax(logits) against integer labels, smoothed by ``smoothing``
    (ε; 0: none) as PyTorch's ``label_smoothing`` and Keras' do: the target of a row is
    (1 - ε) on its label plus ε / k on every one of the k classes.

    Writes dlogits <- (softmax(logits) - target) / n and returns (mean loss, number of rows
    whose argmax equals the label). Uses log-sum-exp, so it is finite for logits of any finite
    size.
    """
    n, k = logits.shape
    total = 0.0
    correct = 0
    inv_n = 1.0 / n
    spread = smoothing * inv_n / k
    for i in range(n):
        row_max = logits[i, 0]
        best = 0
        for j in range(1, k):
            if logits[i, j] > row_max:
                row_max = logits[i, j]
                best = j
        if best == labels[i]:
            correct += 1
        s = 0.0
        for j in range(k):
            e = np.exp(logits[i, j] - row_max)
            dlogits[i, j] = e
            s += e
        total += np.log(s) + row_max - logits[i, labels[i]]
        scale = inv_n / s
        for j in range(k):
            dlogits[i, j] *= scale
        if smoothing != 0.0:
            # -Σ_j target_j log p_j = log Σ e^z - Σ_j target_j z_j
            row_sum = 0.0
            for j in range(k):
                row_sum += logits[i, j]
                dlogits[i, j] -= spread
            total += smoothing * (logits[i, labels[i]] - row_sum / k)
        dlogits[i, labels[i]] -= (1.0 - smoothing) * inv_n
    return total * inv_n, correct


def softmax_cross_entropy_ref(logits, labels, dlogits, smoothing=0.0):
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    target = np.full(logits.shape, smoothing / k)
    target[np.arange(n), labels] += 1 - smoothing
    log_p = (shifted - log_sum[:, None]).astype(np.float64)
    loss = float(-np.sum(target * log_p) / n)
    correct = int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
    np.exp(shifted - log_sum[:, None], out=dlogits)
    dlogits -= target.astype(dlogits.dtype)
    dlogits /= n
    return loss, correct


@njit(cache=True)
def softmax(logits, out):
    """out <- softmax(logits) row by row (stable)."""
    n, k = logits.shape
    for i in range(n):
        row_max = logits[i, 0]
        for j in range(1, k):
            row_max = max(row_max, logits[i, j])
        s = 0.0
        for j in range(k):
            e = np.exp(logits[i, j] - row_max)
            out[i, j] = e
            s += e
        for j in range(k):
            out[i, j] /= s


def softmax_ref(logits, out):
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=out)
    out /= out.sum(axis=1, keepdims=True)


# ---- the output/loss table -------------------------------------------------------------------
# Each pairs an output activation with a loss whose gradient at the logits z is cheap:
# softmax + cross-entropy and sigmoid + cross-entropy give dz = (a - y) / n (scikit-learn's
# note: the canonical link), sigmoid + quadratic (Nielsen's network.py) dz = (a - y) a (1 - a) / n.
SOFTMAX_CE, SIGMOID_CE, SIGMOID_QUADRATIC = 0, 1, 2
OUTPUT_LOSS_CODES = {("softmax", "cross_entropy"): SOFTMAX_CE,
                     ("sigmoid", "cross_entropy"): SIGMOID_CE,
                     ("sigmoid", "quadratic"): SIGMOID_QUADRATIC}


@njit(cache=True)
def sigmoid_loss(code, logits, labels, dlogits):
    """Sigmoid outputs against one-hot targets: mean over rows of Σ_j of the cross-entropy
    -(y ln a + (1-y) ln(1-a)) (computed from z, stable) or of ½(a - y)²."""
    n, k = logits.shape
    total = 0.0
    correct = 0
    inv_n = 1.0 / n
    for i in range(n):
        best = 0
        for j in range(k):
            z = logits[i, j]
            if z > logits[i, best]:
                best = j
            y = 1.0 if j == labels[i] else 0.0
            if z >= 0:
                e = np.exp(-z)
                a = 1.0 / (1.0 + e)
                softplus_minus_z = np.log1p(e)          # log(1 + e^z) - z
                log1p_ez = z + softplus_minus_z         # log(1 + e^z)
            else:
                e = np.exp(z)
                a = e / (1.0 + e)
                log1p_ez = np.log1p(e)
            if code == SIGMOID_CE:
                total += log1p_ez - y * z
                dlogits[i, j] = (a - y) * inv_n
            else:
                total += 0.5 * (a - y) * (a - y)
                dlogits[i, j] = (a - y) * a * (1.0 - a) * inv_n
        if best == labels[i]:
            correct += 1
    return total * inv_n, correct


# The training step takes the loss as a *rule*, as it takes the optimizer (optim.py): a one-field
# namedtuple whose class decides, while Numba types the step, which loss it compiles (a softmax
# fit compiles no sigmoid loss). ``AnyLossRule``, like a plain code, compiles both and chooses at
# run time (the pair tests sweep the losses through one compiled step).
SoftmaxRule = namedtuple("SoftmaxRule", "code smoothing", defaults=(SOFTMAX_CE, 0.0))
SigmoidRule = namedtuple("SigmoidRule", "code")
AnyLossRule = namedtuple("AnyLossRule", "code smoothing", defaults=(0.0,))
LOSS_RULES = (SoftmaxRule, SigmoidRule, AnyLossRule)


def loss_rule(code, any_code=False, smoothing=0.0):
    """The rule of output/loss ``code``; ``any_code``: the rule that compiles every loss.
    ``smoothing``: softmax + cross-entropy's label smoothing (``softmax_cross_entropy``)."""
    code = int(code)
    if code not in OUTPUT_LOSS_CODES.values():
        raise ValueError(f"output/loss code must be one of {sorted(OUTPUT_LOSS_CODES.values())}, "
                         f"got {code}")
    smoothing = float(smoothing)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing!r}")
    if smoothing and code != SOFTMAX_CE:
        raise ValueError("label_smoothing needs a softmax output with cross-entropy loss")
    if any_code:
        return AnyLossRule(code, smoothing)
    return SoftmaxRule(SOFTMAX_CE, smoothing) if code == SOFTMAX_CE else SigmoidRule(code)


@njit(cache=True)
def _either_loss(code, logits, labels, dlogits, smoothing):
    if code == SOFTMAX_CE:
        return softmax_cross_entropy(logits, labels, dlogits, smoothing)
    return sigmoid_loss(code, logits, labels, dlogits)


def _loss_of(code, logits, labels, dlogits):
    raise TypeError("_loss_of runs inside compiled kernels only")


@overload(_loss_of)
def _loss_of_rule(code, logits, labels, dlogits):
    """The rule's loss, chosen while typing (a plain code: both, chosen at run time)."""
    kind = getattr(code, "instance_class", None)
    if kind is SoftmaxRule:
        return lambda code, logits, labels, dlogits: softmax_cross_entropy(
            logits, labels, dlogits, code.smoothing)
    if kind is SigmoidRule:
        return lambda code, logits, labels, dlogits: sigmoid_loss(code.code, logits, labels,
                                                                  dlogits)
    if kind is AnyLossRule:
        return lambda code, logits, labels, dlogits: _either_loss(
            code.code, logits, labels, dlogits, code.smoothing)
    return lambda code, logits, labels, dlogits: _either_loss(code, logits, labels, dlogits,
                                                              0.0)


@njit(cache=True)
def output_loss(code, logits, labels, dlogits):
    """(mean loss, rows classified right); dlogits <- d(mean loss)/d(logits). ``code``: the
    output/loss code, or its rule (``loss_rule``)."""
    return _loss_of(code, logits, labels, dlogits)


def output_loss_ref(code, logits, labels, dlogits):
    smoothing = getattr(code, "smoothing", 0.0)  # a rule's
    code = getattr(code, "code", code)
    if code == SOFTMAX_CE:
        return softmax_cross_entropy_ref(logits, labels, dlogits, smoothing)
    n, k = logits.shape
    z = logits.astype(np.float64)
    y = np.zeros_like(z)
    y[np.arange(n), labels] = 1
    a = 0.5 * (1 + np.tanh(0.5 * z))  # the logistic function, without overflow
    if code == SIGMOID_CE:
        loss = np.sum(np.logaddexp(0, z) - y * z) / n
        d = (a - y) / n
    else:
        loss = 0.5 * np.sum((a - y) ** 2) / n
        d = (a - y) * a * (1 - a) / n
    dlogits[...] = d
    return float(loss), int(np.count_nonzero(np.argmax(logits, axis=1) == labels))


@njit(cache=True)
def output_activation(code, logits, out):
    """out <- the output layer's activation of the logits: softmax, or sigmoid per unit."""
    if code == SOFTMAX_CE:
        softmax(logits, out)
        return
    n, k = logits.shape
    for i in range(n):
        for j in range(k):
            z = logits[i, j]
            if z >= 0:
                out[i, j] = 1 / (1 + np.exp(-z))
            else:
                e = np.exp(z)
                out[i, j] = e / (1 + e)


def output_activation_ref(code, logits, out):
    if code == SOFTMAX_CE:
        softmax_ref(logits, out)
    else:
        out[...] = 0.5 * (1 + np.tanh(0.5 * logits))
