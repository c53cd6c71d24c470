"""SGD with momentum, fused and in place: v <- μ v + g + λ w;  w <- w - α v."""
import numpy as np
from numba import njit


@njit(cache=True)
def momentum_update(w, v, g, lr, momentum, weight_decay):
    """Works on arrays of any shape; the caller passes weight_decay 0 for biases."""
    wf = w.reshape(-1)
    vf = v.reshape(-1)
    gf = g.reshape(-1)
    if weight_decay == 0:
        for i in range(wf.size):
            vi = momentum * vf[i] + gf[i]
            vf[i] = vi
            wf[i] -= lr * vi
    else:
        for i in range(wf.size):
            vi = momentum * vf[i] + gf[i] + weight_decay * wf[i]
            vf[i] = vi
            wf[i] -= lr * vi


def momentum_update_ref(w, v, g, lr, momentum, weight_decay):
    v *= momentum
    v += g
    if weight_decay != 0:
        v += weight_decay * w
    w -= lr * v
