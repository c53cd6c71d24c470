"""The vector gathers of kernels/simd.py against the same arithmetic in NumPy: one block of
LANES pixels at an offset, the pixels around it untouched, float32 and float64."""
import numpy as np
import pytest
from numba import njit

from fastmlp.kernels.simd import LANES, bilinear_block, nearest_block


@njit
def _bilinear_at(src, taps, fx, fy, out, j, down):
    bilinear_block(src, taps, fx, fy, out, j, down)


@njit
def _nearest_at(image, taps, out, j):
    nearest_block(image, taps, out, j)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_block_blends_the_four_taps_of_each_pixel(dtype):
    rng = np.random.default_rng(0)
    width, down, j = 9, 9, LANES  # a 9-wide image; the block starts at pixel LANES
    src = rng.standard_normal(9 * width).astype(dtype)
    n = 3 * LANES
    taps = rng.integers(0, src.size - down - 1, n).astype(dtype)
    fx, fy = rng.random(n).astype(dtype), rng.random(n).astype(dtype)
    out = np.full(n, -7.0, dtype)
    _bilinear_at(src, taps, fx, fy, out, j, down)
    t = taps[j:j + LANES].astype(np.int64)
    a0, b0, a1, b1 = src[t], src[t + 1], src[t + down], src[t + down + 1]
    ax, ay = fx[j:j + LANES], fy[j:j + LANES]
    top, bottom = a0 + ax * (b0 - a0), a1 + ax * (b1 - a1)
    np.testing.assert_array_equal(out[j:j + LANES], top + ay * (bottom - top))
    assert (out[:j] == -7).all() and (out[j + LANES:] == -7).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_block_reads_each_tap_and_zero_for_negative_ones(dtype):
    rng = np.random.default_rng(1)
    image = (rng.random(50) + 1).astype(dtype)
    n = 2 * LANES
    taps = rng.integers(0, image.size, n).astype(dtype)
    taps[LANES + 1::3] = -1.0  # outside the image: 0.0, and nothing read
    out = np.full(n, -7.0, dtype)
    _nearest_at(image, taps, out, LANES)
    t = taps[LANES:]
    expected = np.where(t >= 0, image[np.maximum(t, 0).astype(np.int64)], 0.0)
    np.testing.assert_array_equal(out[LANES:], expected)
    assert (out[LANES:][t < 0] == 0).all() and (out[:LANES] == -7).all()


def test_blocks_refuse_strided_or_mixed_arrays():
    a = np.zeros(4 * LANES, np.float32)
    with pytest.raises(Exception, match="contiguous 1-D float arrays"):
        _nearest_at(a, a[::2], a[:2 * LANES], 0)
    with pytest.raises(ValueError, match="the arrays must have one dtype"):
        _nearest_at(a, a.astype(np.float64), a, 0)
    with pytest.raises(ValueError, match="the arrays must have one dtype"):
        _bilinear_at(a, a, a, a.astype(np.float64), a, 0, 1)


_SCALAR_PATH = """
import numpy as np
from fastmlp import kernels as K
from fastmlp.augment import Augment
from fastmlp.kernels.simd import HARDWARE_GATHERS
assert not HARDWARE_GATHERS, "a generic x86-64 target has no gather instruction"
rng = np.random.default_rng(3)
X = (rng.random((5, 144)) * (rng.random((5, 144)) > 0.6)).astype(np.float32)
for interpolation in ("bilinear", "nearest"):
    params, basis, shape = Augment(shift=2, rotate=15, scale=0.1, elastic_alpha=8,
                                   elastic_sigma=2, interpolation=interpolation).tables((12, 12, 1))
    fast, ref = X.copy(), X.copy()
    scratch = np.zeros((2, K.augment.scratch_size(12, 12, 1, basis.shape[0])), np.float32)
    K.augment.augment_batch(fast, np.uint64(9), params, basis.astype(np.float32), shape, scratch)
    K.augment.augment_batch_ref(ref, np.uint64(9), params, basis, shape)
    assert (fast.view(np.int32) == ref.view(np.int32)).all(), interpolation
    assert (fast != X).any(), interpolation
print("scalar path ok")
"""


def test_without_hardware_gathers_the_scalar_loops_equal_the_twin():
    """Where LLVM would turn the gathers into scalar loads (here: Numba compiling for a
    generic x86-64 CPU), the kernel samples in its scalar loops, bitwise as the twin."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    env.pop("NUMBA_CPU_FEATURES", None)
    run = subprocess.run([sys.executable, "-c", _SCALAR_PATH], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scalar path ok" in run.stdout
