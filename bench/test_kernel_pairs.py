"""pytest-benchmark over every registered kernel pair at MNIST shapes.

Each group holds one kernel at one shape: its Numba side and its NumPy twin, so the ratio
reads at a glance:

    pytest bench/ --benchmark-group-by=group --benchmark-columns=median,ops
    pytest bench/ -k "train_steps and b256"      # one kernel, one batch size
"""
import numpy as np
import pytest
from contextlib import nullcontext

from threadpoolctl import threadpool_limits

from fastmlp.kernels import KERNELS, Case, copy_args

BATCHES = [10, 64, 256, 1024]
HIDDEN = [300, 1024]
DTYPES = {"f32": np.float32, "f64": np.float64}


def case_for(name, batch, hidden, dtype):
    if KERNELS[name].output_layer:  # acts on the 10-class output rather than on 784 -> hidden
        return Case(batch, hidden, 10, dtype)
    return Case(batch, 784, hidden, dtype)


@pytest.mark.parametrize("side", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda h: f"h{h}")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel(benchmark, name, batch, hidden, dtype, side):
    pair = KERNELS[name]
    case = case_for(name, batch, hidden, DTYPES[dtype])
    args = copy_args(pair.make_case(np.random.default_rng(0), case))
    fn = pair.fast if side == "numba" else pair.reference
    benchmark.group = f"{name} b{batch} h{hidden} {dtype}"
    if pair.flops:
        benchmark.extra_info["gflop_per_call"] = pair.flops(case) / 1e9
    fn(*args)  # compile, or load the cache, outside the timing
    # Numba's threads and BLAS's threads must not spin against each other (see training.py)
    parallel = side == "numba" and pair.parallel
    with threadpool_limits(1, user_api="blas") if parallel else nullcontext():
        benchmark(fn, *args)

