"""Fused softmax + cross-entropy: loss and dlogits in one pass, no one-hot matrix."""
import numpy as np
from numba import njit


@njit(cache=True)
def softmax_cross_entropy(logits, labels, dlogits):
    """Mean cross-entropy of softmax(logits) against integer labels.

    Writes dlogits <- (softmax(logits) - onehot(labels)) / n and returns
    (mean loss, number of rows whose argmax equals the label). Uses log-sum-exp, so it is
    finite for logits of any finite size.
    """
    n, k = logits.shape
    total = 0.0
    correct = 0
    inv_n = 1.0 / n
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
        dlogits[i, labels[i]] -= inv_n
    return total * inv_n, correct


def softmax_cross_entropy_ref(logits, labels, dlogits):
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(log_sum - shifted[rows, labels], dtype=np.float64))
    correct = int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
    np.exp(shifted - log_sum[:, None], out=dlogits)
    dlogits[rows, labels] -= 1
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
