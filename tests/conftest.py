import os

import numpy as np
import pytest

from fastmlp.datasets import ENV_VAR, load_mnist

# The README's command passes a relative path (FASTMLP_DATA=../shared/data/mnist); the CLI tests
# run in temporary folders, where it would no longer resolve: make it absolute once, here.
if os.environ.get(ENV_VAR):
    os.environ[ENV_VAR] = os.path.abspath(os.environ[ENV_VAR])

@pytest.fixture(scope="session")
def mnist():
    """The real MNIST files through $FASTMLP_DATA. Missing data fails the test, never skips."""
    if not os.environ.get(ENV_VAR):
        pytest.fail(f"${ENV_VAR} is not set: point it at the MNIST IDX files "
                    f"(.ci/run sets it to ../shared/data/mnist)")
    return load_mnist(os.environ[ENV_VAR], download=False)


def sparse_images(rng, n, d, dtype=np.float32, density=0.2):
    x = rng.random((n, d))
    x[rng.random((n, d)) > density] = 0
    return x.astype(dtype)


@pytest.fixture
def toy_data():
    """A small learnable problem: 10 classes separated by which block of pixels is lit."""
    rng = np.random.default_rng(123)
    n, d = 640, 64
    y = rng.integers(0, 10, n)
    X = sparse_images(rng, n, d, np.float64, density=0.1)
    for c in range(10):
        X[y == c, c * 6:(c + 1) * 6] += 0.8
    return np.clip(X, 0, 1), y
