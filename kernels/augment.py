"""Distortions of a minibatch's images on the fly: random shifts, rotations, scalings and
Simard's elastic distortions (Simard, Steinkraus & Platt 2003), applied to the gathered rows.

Each sample's draws come from a counter-based hash of (seed, epoch, step, row in the batch), as
dropout's masks do: both backends distort alike, and a resumed run sees the very images an
uninterrupted one saw. Output pixel p samples the input, bilinearly (zero outside), at

    c + R(-θ)(p - c - t) / s  +  α · (G_σ * u)(p)

with c the image centre, t a shift, θ an angle, s a scale and u a field of uniform(-1, 1)
displacements smoothed by a Gaussian of σ pixels (zero beyond the image) and scaled by α.
``params`` holds the maxima (see the names below); ``kernel`` the normalised Gaussian.
"""
import math

import numpy as np
from numba import njit, prange

from .data import thread_block
from .dropout import _GOLDEN, mix64

SHIFT, ROTATE, SCALE, ALPHA = range(4)  # max shift (pixels), max angle (radians), max scale, α
N_PARAMS = 4
STREAM = 1_000_003  # the "layer" of the augmentation stream (dropout uses layer indices)
_S11 = np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def gaussian_kernel(sigma):
    """The normalised Gaussian of σ pixels, radius ceil(3σ) (float64); [1] for σ = 0."""
    if sigma <= 0:
        return np.ones(1)
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def scratch_size(h, w, c):
    """Values of one thread's scratch (float64): the source image inside a one-pixel border of
    zeros, and three planes (displacement fields, then source coordinates)."""
    return (h + 2) * (w + 2) * c + 3 * h * w


@njit(cache=True, inline="always")
def _unit(key, counter):
    """A uniform draw in [0, 1) from the hash of (key, counter)."""
    return float(mix64(key + np.uint64(counter) * _GOLDEN) >> _S11) * _TO_UNIT


@njit(cache=True, inline="always")
def _smooth_columns(src, dst, kernel, h, w):
    """dst (h×w) <- src (h×w) convolved along its first axis with the Gaussian, zeros beyond
    the edges; each output sums its taps in increasing order, as the twin."""
    r, K = kernel.shape[0] // 2, kernel.shape[0]
    for y in range(h):
        out = dst[y * w:y * w + w]
        for x in range(w):
            out[x] = 0.0
        for k in range(max(0, r - y), min(K, h + r - y)):
            g = kernel[k]
            row = src[(y + k - r) * w:(y + k - r) * w + w]
            for x in range(w):
                out[x] += g * row[x]


@njit(cache=True, inline="always")
def _smooth(field, tmp, kernel, h, w):
    """field (h×w, row-major) <- itself convolved with the separable Gaussian (first along y,
    then along x), zeros beyond the edges, left TRANSPOSED: the result at (y, x) is
    field[x * h + y]. Both passes run along the first axis, whose rows LLVM vectorises."""
    _smooth_columns(field, tmp, kernel, h, w)
    for y in range(h):
        for x in range(w):
            field[x * h + y] = tmp[y * w + x]
    _smooth_columns(field, tmp, kernel, w, h)
    for j in range(h * w):
        field[j] = tmp[j]


@njit(cache=True)
def augment_row(row, key, i, params, kernel, shape, scratch):
    """Distort sample ``i``'s image ``row`` (h·w·c values, channels last) in place."""
    h, w, c = shape[0], shape[1], shape[2]
    k = mix64(key + np.uint64(i + 1) * _GOLDEN)
    tx = (2 * _unit(k, 0) - 1) * params[SHIFT]
    ty = (2 * _unit(k, 1) - 1) * params[SHIFT]
    theta = (2 * _unit(k, 2) - 1) * params[ROTATE]
    s = 1.0 + (2 * _unit(k, 3) - 1) * params[SCALE]
    cos, sin = math.cos(theta) / s, math.sin(theta) / s
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    n, W2 = h * w, w + 2
    m = (h + 2) * W2 * c  # the source image inside a border of zeros, one pixel wide
    src = scratch[:m]
    fx, fy, tmp = scratch[m:m + n], scratch[m + n:m + 2 * n], scratch[m + 2 * n:m + 3 * n]
    for j in range(W2 * c):
        src[j] = 0.0
        src[m - W2 * c + j] = 0.0
    for y in range(h):
        p = ((y + 1) * W2) * c
        for j in range(c):
            src[p + j] = 0.0
            src[p + (w + 1) * c + j] = 0.0
        dst, line = src[p + c:p + c + w * c], row[y * w * c:(y + 1) * w * c]
        for j in range(w * c):
            dst[j] = line[j]
    alpha = params[ALPHA]
    if alpha != 0:
        for j in range(n):  # uniform(-1, 1) displacement fields, then smoothed
            fx[j] = 2 * _unit(k, 4 + j) - 1
            fy[j] = 2 * _unit(k, 4 + n + j) - 1
        _smooth(fx, tmp, kernel, h, w)
        _smooth(fy, tmp, kernel, h, w)
    sxs, sys_ = tmp, fx  # the source coordinates of every output pixel, then its taps
    for y in range(h):
        for x in range(w):
            dx, dy = x - cx - tx, y - cy - ty
            sx = cx + cos * dx + sin * dy
            if alpha != 0:
                sx += alpha * fx[x * h + y]
            sxs[y * w + x] = sx
    for y in range(h):
        for x in range(w):
            dx, dy = x - cx - tx, y - cy - ty
            sy = cy - sin * dx + cos * dy
            if alpha != 0:
                sy += alpha * fy[x * h + y]
            sys_[y * w + x] = sy
    for j in range(n):
        sx, sy = sxs[j], sys_[j]
        x0, y0 = math.floor(sx), math.floor(sy)
        o = j * c
        if -1.0 <= x0 <= w - 1 and -1.0 <= y0 <= h - 1:
            # the four taps, those outside the image on the zero border: the twin's sum
            ax, ay = sx - x0, sy - y0
            w00, w01 = (1 - ay) * (1 - ax), (1 - ay) * ax
            w10, w11 = ay * (1 - ax), ay * ax
            p = ((int(y0) + 1) * W2 + int(x0) + 1) * c
            q = p + W2 * c
            for ch in range(c):
                row[o + ch] = (w00 * src[p + ch] + w01 * src[p + c + ch]
                               + w10 * src[q + ch] + w11 * src[q + c + ch])
        else:
            for ch in range(c):
                row[o + ch] = 0.0


@njit(cache=True, parallel=True)
def augment_batch(x, key, params, kernel, shape, scratch):
    """augment_row for every row of x; thread t takes one contiguous block of rows."""
    n, T = x.shape[0], scratch.shape[0]
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        for i in range(lo, hi):
            augment_row(x[i], key, i, params, kernel, shape, scratch[t])


# ---- the NumPy twin ------------------------------------------------------------------------
def _units(key, i, counters):
    from .dropout import _M1, _M2, _S27, _S30, _S31

    def mix(z):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)

    with np.errstate(over="ignore"):
        k = mix(np.uint64(key) + np.uint64(i + 1) * _GOLDEN)
        z = mix(k + counters.astype(np.uint64) * _GOLDEN)
    return (z >> _S11).astype(np.float64) * _TO_UNIT


def _smooth_ref(field, kernel):
    r = kernel.shape[0] // 2
    h, w = field.shape
    padded = np.zeros((h + 2 * r, w))
    padded[r:r + h] = field
    tmp = sum(kernel[k] * padded[k:k + h] for k in range(kernel.shape[0]))
    padded = np.zeros((h, w + 2 * r))
    padded[:, r:r + w] = tmp
    return sum(kernel[k] * padded[:, k:k + w] for k in range(kernel.shape[0]))


def augment_batch_ref(x, key, params, kernel, shape, scratch=None):
    h, w, c = (int(v) for v in shape)
    n = h * w
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    for i in range(x.shape[0]):
        u = _units(key, i, np.arange(4))
        tx, ty = (2 * u[0] - 1) * params[SHIFT], (2 * u[1] - 1) * params[SHIFT]
        theta = (2 * u[2] - 1) * params[ROTATE]
        s = 1.0 + (2 * u[3] - 1) * params[SCALE]
        cos, sin = math.cos(theta) / s, math.sin(theta) / s
        dx, dy = xs - cx - tx, ys - cy - ty
        sx, sy = cx + cos * dx + sin * dy, cy - sin * dx + cos * dy
        if params[ALPHA] != 0:
            f = 2 * _units(key, i, np.arange(4, 4 + 2 * n)) - 1
            sx = sx + params[ALPHA] * _smooth_ref(f[:n].reshape(h, w), kernel)
            sy = sy + params[ALPHA] * _smooth_ref(f[n:].reshape(h, w), kernel)
        img = x[i].reshape(h, w, c).astype(np.float64)
        x0, y0 = np.floor(sx), np.floor(sy)
        ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
        ix, iy = x0.astype(np.int64), y0.astype(np.int64)

        def at(yy, xx):
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return np.where(inside[..., None], v, 0.0)

        out = ((1 - ay) * (1 - ax) * at(iy, ix) + (1 - ay) * ax * at(iy, ix + 1)
               + ay * (1 - ax) * at(iy + 1, ix) + ay * ax * at(iy + 1, ix + 1))
        x[i] = out.reshape(-1)
