"""Distortions of a minibatch's images on the fly, as its rows are gathered: random shifts,
rotations, scalings and Simard's elastic distortions (Simard, Steinkraus & Platt 2003).

Each sample's draws come from a counter-based hash of (seed, epoch, step, row in the batch), as
dropout's masks do: both backends distort alike, and a resumed run sees the very images an
uninterrupted one saw. Output pixel p samples the input, bilinearly or at the nearest pixel
(zero outside), at

    c + R(-θ)(p - c - t) / s  +  f(p)

with c the image centre, t a shift, θ an angle, s a scale and f Simard's elastic displacement:
α times a field of uniform(-1, 1) draws smoothed by a Gaussian of σ pixels (zero beyond the
image). That smoothing is linear and separable, F = α G_y U G_xᵀ, so F has the covariance
α²/3 · (G_y G_yᵀ) ⊗ (G_x G_xᵀ); each factor's leading eigenpairs (σ = 4 on 28 pixels: 8 of 28)
hold all but 1e-5 of its variance. The field is drawn in that basis, F = A_y Z A_xᵀ with Z an
r×r matrix of uniform(-1, 1) draws: the same covariance, 3x fewer operations and 8x fewer
draws than smoothing a full field. As the blur is its own mirror image, each basis vector is
even or odd, so the field's bottom rows follow from the sums of its top ones. ``params`` holds
the maxima (see the names below), ``basis`` the factors (``field_basis``).

The draws and the affine map's angle and scale are float64; the points, the fields and the
sampling are computed in the images' dtype (float32 for float32 images: twice the vector width,
the points off by at most a few 1e-6 pixel), so the kernels take the basis and the scratch in
that dtype, and the twin computes in it too.
"""
import math

import numpy as np
from numba import njit, prange

from .data import thread_block
from .dropout import _GOLDEN, mix64
from .simd import HARDWARE_GATHERS, LANES, bilinear_block, nearest_block

SHIFT, ROTATE, SCALE, ALPHA, NEAREST = range(5)  # max shift (pixels), max angle (radians),
N_PARAMS = 5  # max scale, α; NEAREST 1 for nearest-neighbour resampling, 0 for bilinear
STREAM = 1_000_003  # the "layer" of the augmentation stream (dropout uses layer indices)
FIELD_TOLERANCE = 1e-5  # the share of either smoothing's variance the basis may leave out
TERMS = 8  # the field's sums add this many products per pass over a row (0.0 ones past the rank)
_S11 = np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def augment_params(shift=0.0, rotate=0.0, scale=0.0, alpha=0.0, nearest=False):
    """The kernels' parameter table (float64, indexed by SHIFT ... NEAREST): maximum shift in
    pixels, maximum angle in radians, maximum scale, the elastic α, nearest-neighbour sampling."""
    params = np.zeros(N_PARAMS)
    params[SHIFT], params[ROTATE], params[SCALE], params[ALPHA] = shift, rotate, scale, alpha
    params[NEAREST] = bool(nearest)
    return params


def gaussian_kernel(sigma):
    """The normalised Gaussian of σ pixels, radius ceil(3σ) (float64); [1] for σ = 0."""
    if sigma <= 0:
        return np.ones(1)
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def blur_matrix(n, sigma):
    """The n×n matrix of the 1-D smoothing by ``gaussian_kernel(sigma)``, zeros beyond the ends."""
    k = gaussian_kernel(sigma)
    r = k.shape[0] // 2
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(max(0, i - r), min(n, i + r + 1)):
            m[i, j] = k[j - i + r]
    return m


def _leading_factors(n, sigma, tolerance):
    """The blur's leading singular pairs, split by parity: (even, odd), each (n×k), the
    vectors times their singular values, so that A Aᵀ ≈ G Gᵀ for A = [even odd]. The blur is
    symmetric and its own mirror image, so its eigenvectors are even (u[n-1-i] = u[i]) or odd
    (u[n-1-i] = -u[i]); each is found within its parity's subspace and mirrored exactly, which
    lets the kernels compute a field's bottom half from the sums of its top half. Each vector's
    largest entry (the first of a tie) is made positive, so that the basis does not hang on
    LAPACK's choice of signs."""
    g, half = blur_matrix(n, sigma), n // 2
    top = np.arange(half)
    values, vectors, parities = [], [], []
    for parity in (1.0, -1.0):
        q = np.zeros((n, n - half if parity > 0 else half))
        q[top, top], q[n - 1 - top, top] = math.sqrt(0.5), parity * math.sqrt(0.5)
        if parity > 0 and n % 2:
            q[half, half] = 1.0
        lam, v = np.linalg.eigh(q.T @ g @ q)
        for k in range(v.shape[1]):
            u = q @ v[:, k]
            u[n - 1 - top] = parity * u[top]
            u *= np.sign(u[np.abs(u).argmax()])
            values.append(abs(lam[k]))
            vectors.append(u)
            parities.append(parity)
    order = np.argsort(values, kind="stable")[::-1]
    energy = np.asarray(values)[order] ** 2
    left = np.cumsum(energy[::-1])[::-1] / energy.sum()  # left[r]: share dropped keeping r
    r = next((k for k in range(1, n) if left[k] < tolerance), n)
    kept = order[:r]
    even = [vectors[k] * values[k] for k in kept if parities[k] > 0]
    odd = [vectors[k] * values[k] for k in kept if parities[k] < 0]
    return (np.array(even).reshape(-1, n).T, np.array(odd).reshape(-1, n).T)


def field_basis(h, w, sigma, alpha, tolerance=FIELD_TOLERANCE):
    """The elastic field's factors, (2m, h + w) float64 (the kernels take them cast to the
    images' dtype), row a holding α·A_y[:, a] (h values) then A_x[:, a] (w values). Rows
    0..m-1 hold the even vectors, rows m..2m-1 the odd ones, each factor's padded with zeros: m
    is the most vectors of one parity in either factor. (0, h + w) when α is 0."""
    if alpha == 0:
        return np.zeros((0, h + w))
    (ey, oy), (ex, ox) = (_leading_factors(h, sigma, tolerance),
                          _leading_factors(w, sigma, tolerance))
    m = max(ey.shape[1], oy.shape[1], ex.shape[1], ox.shape[1])
    basis = np.zeros((2 * m, h + w))
    basis[:ey.shape[1], :h], basis[m:m + oy.shape[1], :h] = alpha * ey.T, alpha * oy.T
    basis[:ex.shape[1], h:], basis[m:m + ox.shape[1], h:] = ex.T, ox.T
    return basis


def scratch_size(h, w, c, rank):
    """Values of one thread's scratch (in the images' dtype): the source image inside a border
    of zeros (one pixel before, two after), which bilinear sampling reads; the tap each pixel
    reads and its two fractions (h·w values each); h rows of both displacement fields side by
    side; the affine map's terms of each column (x, then y) and a row of zeros; a row of both
    fields' odd sums (the middle one's, for odd h); ``rank`` rows of the products Z A_xᵀ of
    both fields, side by side; and a copy of the image (h·w·c values), which ``augment_batch``
    distorts into the image itself."""
    return (h + 3) * (w + 3) * c + 5 * h * w + 5 * w + 2 * rank * w + h * w * c


@njit(cache=True, inline="always")
def _unit(key, counter):
    """A uniform draw in [0, 1) from the hash of (key, counter)."""
    return float(mix64(key + np.uint64(counter) * _GOLDEN) >> _S11) * _TO_UNIT


@njit(cache=True, inline="always")
def _add_terms(out, first, coefs, rows, n):
    """out[:n] (+)= the sum of coefs[k] * rows[k][:n] over k in order (TERMS of each), from 0.0
    if ``first``."""
    c0, c1, c2, c3, c4, c5, c6, c7 = coefs
    v0, v1, v2, v3, v4, v5, v6, v7 = rows
    zero = out.dtype.type(0.0)
    if first:
        for x in range(n):
            out[x] = (zero + c0 * v0[x] + c1 * v1[x] + c2 * v2[x] + c3 * v3[x]
                      + c4 * v4[x] + c5 * v5[x] + c6 * v6[x] + c7 * v7[x])
    else:
        for x in range(n):
            out[x] = (out[x] + c0 * v0[x] + c1 * v1[x] + c2 * v2[x] + c3 * v3[x]
                      + c4 * v4[x] + c5 * v5[x] + c6 * v6[x] + c7 * v7[x])


@njit(cache=True, inline="always")
def _draw(key, counter, b, r, T):
    """Z's entry b of a row (counter its first) as a T, or 0.0 past the rank r."""
    return T(2 * _unit(key, counter + b) - 1) if b < r else T(0.0)


@njit(cache=True, inline="always")
def _basis_x(basis, b, h, w):
    """A_x's column b as the basis holds it, or column 0 past the rank (weighted by 0.0)."""
    b = b if b < basis.shape[0] else 0
    return basis[b, h:h + w]


@njit(cache=True, inline="always")
def _coef(basis, block, k, m, y):
    """α·A_y[y, block + k] as the basis holds it, or 0.0 past the block's m vectors."""
    return basis[block + k, y] if k < m else basis.dtype.type(0.0)


@njit(cache=True, inline="always")
def _tmp_row(tmp, block, k, m, w2):
    """Row block + k of Z A_xᵀ (both fields side by side), or the block's first past its m
    rows (weighted by 0.0)."""
    a = block + k if k < m else block
    return tmp[a * w2:(a + 1) * w2]


@njit(cache=True, inline="always")
def _sum4(start, c, v, x):
    """start + c[0]·v[0][x] + ... + c[3]·v[3][x], in that order."""
    return start + c[0] * v[0][x] + c[1] * v[1][x] + c[2] * v[2][x] + c[3] * v[3][x]


@njit(cache=True, inline="always")
def _add_mirrored(top, bottom, first, last, ce, re, co, ro, n):
    """Four more terms of the even sum e (coefficients ce, rows re) and of the odd sum o (co,
    ro), from 0.0 if ``first``, else from top and bottom; then top, bottom <- e + o, e - o if
    ``last``, else e, o."""
    zero = top.dtype.type(0.0)
    if first and last:
        for x in range(n):
            e, o = _sum4(zero, ce, re, x), _sum4(zero, co, ro, x)
            top[x], bottom[x] = e + o, e - o
    elif first:
        for x in range(n):
            top[x], bottom[x] = _sum4(zero, ce, re, x), _sum4(zero, co, ro, x)
    elif last:
        for x in range(n):
            e, o = _sum4(top[x], ce, re, x), _sum4(bottom[x], co, ro, x)
            top[x], bottom[x] = e + o, e - o
    else:
        for x in range(n):
            top[x], bottom[x] = _sum4(top[x], ce, re, x), _sum4(bottom[x], co, ro, x)


@njit(cache=True, inline="always")
def _draw_fields(key, first, basis, h, w, fields, tmp, spare):
    """Row y of ``fields`` (2w values) <- row y of A_y Z A_xᵀ for two r×r matrices Z of
    uniform(-1, 1) draws, the x-field's then the y-field's: Z[a, b] is counter first + a·r + b
    for the x-field, that plus r² for the y-field. The first product adds TERMS products per
    pass over a row (past r, a row already used times 0.0: the sums unchanged). A_y's first
    m = r/2 vectors are even and the others odd (``field_basis``), so row y is E + O and row
    h-1-y is E - O, with E and O the sums over the even and the odd vectors at row y: the second
    product runs over the top half of the rows, four products of each sum per pass, both
    fields' rows side by side (long passes with few loads and stores of the sums are what let
    the compiled loops run at full vector width). ``spare`` holds the middle row's O for odd h.
    Every sum runs in increasing order of its index, as the twin's."""
    r, w2, T = basis.shape[0], 2 * w, fields.dtype.type
    m = r // 2
    for b in range(0, r, TERMS):  # A_x's rows b..b+7 (taken once), added to every row of tmp
        rows = (_basis_x(basis, b, h, w), _basis_x(basis, b + 1, h, w),
                _basis_x(basis, b + 2, h, w), _basis_x(basis, b + 3, h, w),
                _basis_x(basis, b + 4, h, w), _basis_x(basis, b + 5, h, w),
                _basis_x(basis, b + 6, h, w), _basis_x(basis, b + 7, h, w))
        for a in range(r):  # tmp's row a: (Z_x A_xᵀ)[a], then (Z_y A_xᵀ)[a]
            tx, ty = tmp[a * w2:a * w2 + w], tmp[a * w2 + w:(a + 1) * w2]
            cx, cy = first + a * r, first + r * r + a * r
            for out, c in ((tx, cx), (ty, cy)):
                z = (_draw(key, c, b, r, T), _draw(key, c, b + 1, r, T),
                     _draw(key, c, b + 2, r, T), _draw(key, c, b + 3, r, T),
                     _draw(key, c, b + 4, r, T), _draw(key, c, b + 5, r, T),
                     _draw(key, c, b + 6, r, T), _draw(key, c, b + 7, r, T))
                _add_terms(out, b == 0, z, rows, w)
    for a in range(0, m, 4):  # rows a..a+3 of each parity's Z A_xᵀ (taken once), to every row
        first, last = a == 0, a + 4 >= m
        re = (_tmp_row(tmp, 0, a, m, w2), _tmp_row(tmp, 0, a + 1, m, w2),
              _tmp_row(tmp, 0, a + 2, m, w2), _tmp_row(tmp, 0, a + 3, m, w2))
        ro = (_tmp_row(tmp, m, a, m, w2), _tmp_row(tmp, m, a + 1, m, w2),
              _tmp_row(tmp, m, a + 2, m, w2), _tmp_row(tmp, m, a + 3, m, w2))
        for y in range((h + 1) // 2):
            top = fields[y * w2:(y + 1) * w2]
            bottom = fields[(h - 1 - y) * w2:(h - y) * w2] if 2 * y + 1 != h else spare
            ce = (_coef(basis, 0, a, m, y), _coef(basis, 0, a + 1, m, y),
                  _coef(basis, 0, a + 2, m, y), _coef(basis, 0, a + 3, m, y))
            co = (_coef(basis, m, a, m, y), _coef(basis, m, a + 1, m, y),
                  _coef(basis, m, a + 2, m, y), _coef(basis, m, a + 3, m, y))
            _add_mirrored(top, bottom, first, last, ce, re, co, ro, w2)


@njit(cache=True, inline="always")
def _bilinear(src, p, q, c, ax, ay):
    """The twin's blend of the four taps, those outside the image on the zero border: src[p] and
    src[p + c] on row y0, src[q] and src[q + c] on row y0 + 1, at fractions (ax, ay): row y0's
    pair and row y0 + 1's each interpolated along x, then those two along y (as
    ``simd.bilinear_block``)."""
    top, bottom = src[p] + ax * (src[p + c] - src[p]), src[q] + ax * (src[q + c] - src[q])
    return top + ay * (bottom - top)


@njit(cache=True, inline="always")
def _nearest_tap(sx, sy, width, height, T):
    """The index, in the image, of the pixel nearest (sx, sy) (half rounded up), or -1.0 if
    that pixel is outside the image; a T, exact."""
    x0, y0 = np.floor(sx + T(0.5)), np.floor(sy + T(0.5))
    inside = (x0 >= T(0.0)) & (x0 < width) & (y0 >= T(0.0)) & (y0 < height)
    return y0 * width + x0 if inside else T(-1.0)


@njit(cache=True, inline="always")
def _bilinear_tap(sx, sy, right, bottom, stride, T):
    """(sx, sy) clamped into [-1, w] x [-1, h]: the index, in the bordered image, of the pixel
    at its top left (a T, exact), and its fractions past that pixel."""
    sx = min(max(sx, T(-1.0)), right)
    sy = min(max(sy, T(-1.0)), bottom)
    x0, y0 = np.floor(sx), np.floor(sy)
    return (y0 + T(1.0)) * stride + (x0 + T(1.0)), sx - x0, sy - y0


@njit(cache=True)
def augment_row(image, row, key, i, params, basis, shape, scratch):
    """Distort sample ``i``'s ``image`` (h·w·c values, channels last) into ``row``, which must
    not overlap it (nearest sampling reads the image while it writes the row); ``basis`` and
    ``scratch`` in the row's dtype, which the points and the sampling are computed in."""
    h, w, c, T = shape[0], shape[1], shape[2], row.dtype.type
    k = mix64(key + np.uint64(i + 1) * _GOLDEN)
    tx = (2 * _unit(k, 0) - 1) * params[SHIFT]
    ty = (2 * _unit(k, 1) - 1) * params[SHIFT]
    theta = (2 * _unit(k, 2) - 1) * params[ROTATE]
    s = 1.0 + (2 * _unit(k, 3) - 1) * params[SCALE]
    cos, sin = math.cos(theta) / s, math.sin(theta) / s
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    n, W2, w2 = h * w, w + 3, 2 * w
    m = (h + 3) * W2 * c
    src = scratch[:m]
    taps, frac_x, frac_y = (scratch[m:m + n], scratch[m + n:m + 2 * n],
                            scratch[m + 2 * n:m + 3 * n])
    fields = scratch[m + 3 * n:m + 5 * n]
    rest = m + 5 * n
    col_sx, col_sy, no_disp = (scratch[rest:rest + w], scratch[rest + w:rest + w2],
                               scratch[rest + w2:rest + 3 * w])
    spare, tmp = scratch[rest + 3 * w:rest + 5 * w], scratch[rest + 5 * w:]
    # bilinear sampling reads the source inside a border of zeros, one pixel before it and two
    # after: clamped into [-1, w] x [-1, h], a point outside reads only zeros (no test per
    # pixel); nearest sampling reads the image itself, a point outside as tap -1
    nearest = params[NEAREST] != 0
    if not nearest:
        for j in range(m):  # one long loop of zeros, then the image's rows inside the border
            src[j] = 0.0
        for y in range(h):
            p = ((y + 1) * W2) * c
            dst, line = src[p + c:p + c + w * c], image[y * w * c:(y + 1) * w * c]
            for j in range(w * c):
                dst[j] = line[j]
    # each point's source, c + R(-θ)(p - c - t) / s + f(p), summed in the twin's order: the
    # terms of column x first, then those of row y, then the displacement (0.0 without one)
    for x in range(w):
        dx = x - cx - tx
        col_sx[x], col_sy[x], no_disp[x] = cx + cos * dx, cy - sin * dx, 0.0
    elastic = params[ALPHA] != 0
    if elastic:
        _draw_fields(k, 4, basis, h, w, fields, tmp, spare)
    right, bottom, stride = T(w), T(h), T(W2)
    for y in range(h):  # the tap each point reads (and for bilinear sampling its fractions)
        dy = y - cy - ty
        row_sx, row_sy = T(sin * dy), T(cos * dy)
        disp_x = fields[y * w2:y * w2 + w] if elastic else no_disp
        disp_y = fields[y * w2 + w:(y + 1) * w2] if elastic else no_disp
        tp = taps[y * w:(y + 1) * w]
        if nearest:
            for x in range(w):
                tp[x] = _nearest_tap(col_sx[x] + row_sx + disp_x[x],
                                     col_sy[x] + row_sy + disp_y[x], right, bottom, T)
        else:
            fr_x, fr_y = frac_x[y * w:(y + 1) * w], frac_y[y * w:(y + 1) * w]
            for x in range(w):
                tp[x], fr_x[x], fr_y[x] = _bilinear_tap(col_sx[x] + row_sx + disp_x[x],
                                                        col_sy[x] + row_sy + disp_y[x], right,
                                                        bottom, stride, T)
    # then the taps, LANES pixels at a time for one channel where the CPU gathers; unsigned
    # indices, which Numba does not test for negative ones
    cu, down = np.uint64(c), np.uint64(W2 * c)
    blocks = n - n % LANES if c == 1 and HARDWARE_GATHERS else 0
    if nearest:
        if c == 1:
            for j in range(0, blocks, LANES):
                nearest_block(image, taps, row, j)
            for j in range(blocks, n):  # tap -1 reads pixel 0, but writes 0.0
                t = taps[j]
                v = image[np.uint64(int(max(t, T(0.0))))]
                row[j] = v if t >= T(0.0) else T(0.0)
            return
        for j in range(n):
            t = taps[j]
            p, o = np.uint64(int(max(t, T(0.0)))) * cu, j * c
            for ch in range(c):
                v = image[p + np.uint64(ch)]
                row[o + ch] = v if t >= T(0.0) else T(0.0)
        return
    if c == 1:
        for j in range(0, blocks, LANES):
            bilinear_block(src, taps, frac_x, frac_y, row, j, W2)
        for j in range(blocks, n):
            p = np.uint64(int(taps[j]))
            row[j] = _bilinear(src, p, p + down, cu, frac_x[j], frac_y[j])
        return
    for j in range(n):
        p, o = np.uint64(int(taps[j])) * cu, j * c
        for ch in range(c):
            q = p + np.uint64(ch)
            row[o + ch] = _bilinear(src, q, q + down, cu, frac_x[j], frac_y[j])


@njit(cache=True, parallel=True)
def augment_batch(x, key, params, basis, shape, scratch):
    """augment_row for every row of x, in place, through a copy of the row at the end of the
    thread's scratch; thread t takes one contiguous block of rows. ``basis`` and ``scratch`` in
    x's dtype."""
    if scratch.itemsize != x.itemsize or basis.itemsize != x.itemsize:
        raise ValueError("augment_batch: basis and scratch must have the images' dtype")
    n, T, size = x.shape[0], scratch.shape[0], x.shape[1]
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        copy = scratch[t][scratch.shape[1] - size:]
        for i in range(lo, hi):
            for j in range(size):
                copy[j] = x[i, j]
            augment_row(copy, x[i], key, i, params, basis, shape, scratch[t])


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


def _field_ref(key, i, first, basis, h, w):
    r, dt = basis.shape[0], basis.dtype
    z = (2 * _units(key, i, np.arange(first, first + r * r)) - 1).astype(dt).reshape(r, r)
    t = np.zeros((r, w), dt)
    for b in range(r):
        t += z[:, b:b + 1] * basis[b, h:]
    even, odd = np.zeros((h, w), dt), np.zeros((h, w), dt)  # sums over A_y's even and odd vectors
    for a in range(r // 2):
        even += basis[a, :h, None] * t[a]
    for a in range(r // 2, r):
        odd += basis[a, :h, None] * t[a]
    return even + odd


def augment_batch_ref(x, key, params, basis, shape, scratch=None):
    h, w, c = (int(v) for v in shape)
    dt = x.dtype  # the points and the sampling in the images' dtype, as the kernel's
    basis = basis.astype(dt)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    for i in range(x.shape[0]):
        u = _units(key, i, np.arange(4))
        tx, ty = (2 * u[0] - 1) * params[SHIFT], (2 * u[1] - 1) * params[SHIFT]
        theta = (2 * u[2] - 1) * params[ROTATE]
        s = 1.0 + (2 * u[3] - 1) * params[SCALE]
        cos, sin = math.cos(theta) / s, math.sin(theta) / s
        dx, dy = xs - cx - tx, ys - cy - ty
        sx = (cx + cos * dx).astype(dt) + (sin * dy).astype(dt)
        sy = (cy - sin * dx).astype(dt) + (cos * dy).astype(dt)
        if params[ALPHA] != 0:
            r2 = basis.shape[0] ** 2
            sx = sx + _field_ref(key, i, 4, basis, h, w)
            sy = sy + _field_ref(key, i, 4 + r2, basis, h, w)
        img = x[i].reshape(h, w, c)

        def at(yy, xx):
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return np.where(inside[..., None], v, 0.0)

        if params[NEAREST] != 0:
            x[i] = at(np.floor(sy + 0.5).astype(np.int64),
                      np.floor(sx + 0.5).astype(np.int64)).reshape(-1)
            continue
        x0, y0 = np.floor(sx), np.floor(sy)
        ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
        ix, iy = x0.astype(np.int64), y0.astype(np.int64)
        a0, b0, a1, b1 = at(iy, ix), at(iy, ix + 1), at(iy + 1, ix), at(iy + 1, ix + 1)
        top, bottom = a0 + ax * (b0 - a0), a1 + ax * (b1 - a1)
        x[i] = (top + ay * (bottom - top)).reshape(-1)
