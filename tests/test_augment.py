"""Augmentation: the distortions against scipy's bilinear and nearest-neighbour resampling at
the same coordinates, determinism, both backends in a fit, bitwise resume, Nielsen's expansion,
the preview, and bad settings."""
import math
import subprocess
import sys

import numba
import numpy as np
import pytest
from scipy import ndimage

from fastmlp import Network, recipes
from fastmlp import kernels as K
from fastmlp.augment import Augment, expand_mnist
from fastmlp.optimizers import Adam
from fastmlp.schedules import CosineDecay
from fastmlp.training import Trainer


def digit_like(n=6, side=12, seed=0):
    rng = np.random.default_rng(seed)
    X = np.zeros((n, side, side), np.float64)
    for i in range(n):
        r, c = rng.integers(2, side - 6, 2)
        X[i, r:r + 4, c:c + 3] = rng.random((4, 3)) * 0.5 + 0.5
    return X.reshape(n, -1)


@pytest.mark.parametrize("side", [12, 13])  # 13: the fields' middle row has no mirror
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("elastic", [False, True])
def test_distortions_equal_scipy_sampling_at_the_drawn_coordinates(elastic, interpolation, side):
    X = digit_like(side=side)
    aug = Augment(shift=2, rotate=15, scale=0.1, elastic_alpha=8 if elastic else 0,
                  elastic_sigma=2, interpolation=interpolation)
    params, basis, shape = aug.tables((side, side, 1))
    key = np.uint64(K.stream_key(5, 1, 2, K.augment.STREAM))
    out = X.copy()
    K.augment.augment_batch_ref(out, key, params, basis, shape)
    fast = X.copy()
    scratch = np.zeros((2, K.augment.scratch_size(side, side, 1, basis.shape[0])))
    K.augment.augment_batch(fast, key, params, basis, shape, scratch)
    np.testing.assert_array_equal(fast, out)
    # float32 images: computed in float32, by the kernel and the twin alike
    out32, fast32 = X.astype(np.float32), X.astype(np.float32)
    K.augment.augment_batch_ref(out32, key, params, basis, shape)
    K.augment.augment_batch(fast32, key, params, basis.astype(np.float32), shape,
                            scratch.astype(np.float32))
    np.testing.assert_array_equal(fast32, out32)
    if interpolation == "bilinear":  # the float32 points: a few 1e-6 pixel off float64's
        np.testing.assert_allclose(out32, out, atol=1e-5)
    else:  # a point that close to a half pixel may round the other way
        assert np.mean(out32 != out.astype(np.float32)) < 0.01
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    c = (side - 1) / 2
    for i in range(len(X)):
        r = basis.shape[0]
        u = K.augment._units(key, i, np.arange(4 + 2 * r * r))
        tx, ty = (2 * u[:2] - 1) * 2
        theta, s = (2 * u[2] - 1) * math.radians(15), 1 + (2 * u[3] - 1) * 0.1
        assert abs(tx) <= 2 and abs(theta) <= math.radians(15) and 0.9 <= s <= 1.1
        dx, dy = xs - c - tx, ys - c - ty  # inverse map: rotate by -theta, scale by 1/s
        sx = c + (math.cos(theta) * dx + math.sin(theta) * dy) / s
        sy = c + (-math.sin(theta) * dx + math.cos(theta) * dy) / s
        if elastic:  # α A_y Z A_xᵀ, the basis' rows holding α A_y then A_x
            z = (2 * u[4:] - 1).reshape(2, r, r)
            fx, fy = (basis[:, :side].T @ zk @ basis[:, side:] for zk in z)
            sx, sy = sx + fx, sy + fy
        expected = ndimage.map_coordinates(X[i].reshape(side, side), [sy, sx],
                                           order=1 if interpolation == "bilinear" else 0,
                                           mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(out[i].reshape(side, side), expected, atol=1e-12)


@pytest.mark.parametrize("h, w, sigma", [(28, 28, 4.0), (12, 17, 2.0), (9, 6, 1.0)])
def test_elastic_fields_have_the_covariance_of_smoothed_uniform_noise(h, w, sigma):
    """Simard's field is α·(G * U), U uniform(-1, 1): covariance α²/3 (G_y G_yᵀ) ⊗ (G_x G_xᵀ).
    The basis must reproduce each factor (scipy's smoothing, zeros beyond the edges) but for
    the share of its variance it may leave out; drawn fields must match scipy-smoothed ones."""
    alpha = 5.0
    basis = K.augment.field_basis(h, w, sigma, alpha)
    m = basis.shape[0] // 2  # the kernels' mirrored rows need each vector exactly even or odd
    np.testing.assert_array_equal(basis[:m, :h], basis[:m, h - 1::-1])
    np.testing.assert_array_equal(basis[m:, :h], -basis[m:, h - 1::-1])
    np.testing.assert_array_equal(basis[:m, h:], basis[:m, :h - 1:-1])
    np.testing.assert_array_equal(basis[m:, h:], -basis[m:, :h - 1:-1])
    kernel = K.augment.gaussian_kernel(sigma)
    for n, factor, scale in ((h, basis[:, :h].T, alpha), (w, basis[:, h:].T, 1.0)):
        blur = ndimage.correlate1d(np.eye(n), kernel, axis=0, mode="constant")
        exact = scale ** 2 * blur @ blur.T
        dropped = np.linalg.norm(factor @ factor.T - exact) / np.trace(exact)
        assert dropped <= K.augment.FIELD_TOLERANCE
    draws = 3000
    key = np.uint64(K.stream_key(1, 2, 3, K.augment.STREAM))
    fields = np.array([K.augment._field_ref(key, i, 4, basis, h, w) for i in range(draws)])
    rng = np.random.default_rng(0)
    smoothed = np.array([alpha * ndimage.correlate(rng.uniform(-1, 1, (h, w)),
                                                   np.outer(kernel, kernel), mode="constant")
                         for _ in range(draws)])
    assert abs(fields.mean()) < 0.1 * smoothed.std()
    np.testing.assert_allclose(fields.var(axis=0), smoothed.var(axis=0), rtol=0.15)
    corr = np.corrcoef(fields[:, h // 2, :].T)[w // 2]  # along a row, from its middle
    np.testing.assert_allclose(corr, np.corrcoef(smoothed[:, h // 2, :].T)[w // 2], atol=0.1)


def test_draws_depend_on_seed_epoch_step_and_row_only():
    X = digit_like(4)
    aug = Augment(shift=1.5, rotate=10, elastic_alpha=6, elastic_sigma=2)
    a = aug.apply(X, (12, 12, 1), seed=1, epoch=3, step=2)
    np.testing.assert_array_equal(a, aug.apply(X, (12, 12, 1), seed=1, epoch=3, step=2))
    for other in (dict(seed=2, epoch=3, step=2), dict(seed=1, epoch=4, step=2),
                  dict(seed=1, epoch=3, step=1)):
        assert not np.allclose(a, aug.apply(X, (12, 12, 1), **other))
    assert not np.allclose(a[0], aug.apply(X[[1, 0]], (12, 12, 1), seed=1, epoch=3, step=2)[1])
    np.testing.assert_array_equal(Augment().apply(X, (12, 12, 1)), X)  # all off: identity


@pytest.mark.parametrize("channels", [1, 3])
def test_nearest_resampling_adds_no_new_values_and_keeps_the_images_sparse(channels):
    """Every pixel of a nearest-neighbour distortion is one of the image's own pixels (all its
    channels together) or zero; bilinear resampling spreads the strokes' edges."""
    rng = np.random.default_rng(1)
    side = 16
    X = np.repeat(digit_like(40, side, seed=2), channels, axis=1)  # channels last
    X = (X.reshape(40, side * side, channels) * rng.uniform(0.5, 1, channels)).reshape(40, -1)
    shape = (side, side, channels)
    kw = dict(shift=2, rotate=12, elastic_alpha=8, elastic_sigma=2)
    near = Augment(interpolation="nearest", **kw).apply(X, shape, seed=4)
    bilinear = Augment(**kw).apply(X, shape, seed=4)
    params, basis, shp = Augment(interpolation="nearest", **kw).tables(shape)
    twin = X.copy()
    K.augment.augment_batch_ref(twin, np.uint64(K.stream_key(4, 0, 0, K.augment.STREAM)), params,
                                basis, shp)
    np.testing.assert_array_equal(near, twin)
    for i in range(len(X)):
        pixels = {tuple(p) for p in X[i].reshape(-1, channels)} | {(0.0,) * channels}
        assert {tuple(p) for p in near[i].reshape(-1, channels)} <= pixels
    assert not np.array_equal(near, X)
    near_density, density, bilinear_density = (np.count_nonzero(a) / a.size
                                                for a in (near, X, bilinear))
    assert near_density < 1.1 * density < bilinear_density


def test_the_augmented_mlp_recipe_shortened_learns_real_digits(mnist):
    """The augmented-mlp recipe as built (its network, distortion, optimizer and batch), for 3
    epochs on 20,000 MNIST images: its distortion changes the digits and, sampling nearest, keeps
    them as sparse as the originals; the fit records it and gets most test digits right (the
    full recipe: README, "Named recipes")."""
    (X, y), (Xt, yt) = mnist
    net, fit = recipes.build("augmented-mlp", seed=0)
    aug = fit["augment"]
    assert (aug.elastic_alpha, aug.elastic_sigma, aug.interpolation) == (34, 4, "nearest")
    distorted = aug.apply(X[:1000], (28, 28, 1), seed=0)
    assert not np.array_equal(distorted, X[:1000])
    assert np.count_nonzero(distorted) < 1.05 * np.count_nonzero(X[:1000])
    fit.update(epochs=3, lr_schedule=CosineDecay(3))
    net.fit(X[:20000], y[:20000], verbose=0, **fit)
    assert net.train_config["augment"] == aug.config()
    assert net.evaluate(Xt[:2000], yt[:2000])["accuracy"] > 0.93


def quadrant_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = np.zeros((n, 12, 12), np.float32)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        X[i, r * 6 + 1:r * 6 + 5, c * 6 + 1:c * 6 + 5] = 0.9
    return X.reshape(n, -1), y


@pytest.mark.parametrize("sparse, interpolation", [(True, "bilinear"), (False, "bilinear"),
                                                   (True, "nearest")])
def test_fit_with_augmentation_agrees_across_backends_and_learns(sparse, interpolation):
    X, y = quadrant_data()
    if not sparse:
        X = X + 0.05  # dense inputs: the gathered-rows path
    aug = Augment(shift=1, rotate=10, scale=0.05, elastic_alpha=4, elastic_sigma=2,
                  interpolation=interpolation)
    nets = {}
    for backend in ("numba", "numpy"):
        nets[backend] = Network([144, 32, 4], seed=3, backend=backend)
        nets[backend].fit(X, y, epochs=4, batch_size=32, optimizer=Adam(3e-3), augment=aug,
                          verbose=0)
    for a, b in zip(nets["numba"].weights, nets["numpy"].weights):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    plain = Network([144, 32, 4], seed=3)
    plain.fit(X, y, epochs=4, batch_size=32, optimizer=Adam(3e-3), verbose=0)
    assert not np.allclose(plain.weights[0], nets["numba"].weights[0])
    assert nets["numba"].evaluate(X, y)["accuracy"] > 0.9
    assert nets["numba"].train_config["augment"]["rotate"] == 10
    assert nets["numba"].train_config["augment"]["interpolation"] == interpolation


@pytest.mark.parametrize("sparse", [True, False])
def test_augmentation_runs_on_numba_threads_only_beside_layers_that_do(sparse, monkeypatch):
    """Beside the zero-skipping layer the distortions take Numba's threads; in a step whose
    products are all BLAS's they run on one thread and BLAS keeps its threads."""
    X, y = quadrant_data(64)
    if not sparse:
        X = X + 0.05  # dense inputs: every product is BLAS's
    monkeypatch.setenv("FASTMLP_FIRST_LAYER", "sparse")  # not a path timed on this machine
    net = Network([144, 32, 4], seed=3)
    trainer = Trainer(net, X, y, 32, Adam(1e-3), augment=Augment(shift=1).tables((12, 12, 1)))
    assert trainer.sparse == sparse
    assert K.layers_use_threads(trainer.params, trainer.plan) == sparse
    assert trainer.limit_blas == sparse  # BLAS limited to one thread, or not
    assert trainer.ws.aug_scratch.shape[0] == (numba.get_num_threads() if sparse else 1)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_interrupted_augmented_fit_resumes_bitwise(tmp_path, interrupt_after, backend):
    X, y = quadrant_data(160)
    aug = Augment(shift=1, rotate=8, elastic_alpha=4, elastic_sigma=2)
    kw = dict(epochs=3, batch_size=16, optimizer=Adam(3e-3), augment=aug, verbose=0)
    full = Network([144, 24, 4], seed=5, dropout=0.2, backend=backend)
    full.fit(X, y, **kw)
    undo = interrupt_after(backend, 5 + 3)  # 10 steps an epoch in chunks of 2: inside epoch two
    net = Network([144, 24, 4], seed=5, dropout=0.2, backend=backend)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    assert net.epochs_done == 1
    undo()
    resumed = Network([144, 24, 4], seed=0, dropout=0.2, backend=backend)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)


def test_expand_mnist_adds_the_four_one_pixel_shifts():
    X = np.arange(2 * 9, dtype=np.float32).reshape(2, 9) + 1
    Xe, ye = expand_mnist(X, np.array([3, 7]), image_shape=(3, 3))
    assert Xe.shape == (10, 9) and list(ye) == [3, 7] * 5
    img = X[0].reshape(3, 3)
    up, down, left, right = (Xe[k].reshape(3, 3) for k in (2, 4, 6, 8))
    np.testing.assert_array_equal(up, [img[1], img[2], [0, 0, 0]])
    np.testing.assert_array_equal(down, [[0, 0, 0], img[0], img[1]])
    np.testing.assert_array_equal(left[:, :2], img[:, 1:])
    np.testing.assert_array_equal(right[:, 1:], img[:, :2])
    with pytest.raises(ValueError, match="X must be"):
        expand_mnist(X[:, :8], [0, 1], image_shape=(3, 3))


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="rotate"):
        Augment(rotate=-5)
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=1.5)
    with pytest.raises(ValueError, match="elastic_sigma"):
        Augment(elastic_alpha=10, elastic_sigma=0)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Augment(shift=1, interpolation="bicubic")
    X, y = quadrant_data(32)
    with pytest.raises(TypeError, match="augment must be"):
        Network([144, 4]).fit(X, y, augment="elastic", verbose=0)
    with pytest.raises(ValueError, match="not a square image"):
        Network([143, 4]).fit(X[:, :143], y, augment=Augment(shift=1), verbose=0)
    with pytest.raises(ValueError, match="image_shape: at most 2\\*\\*24 pixels"):
        Augment(shift=1).tables((4094, 4094, 1))
    params, basis, shape = Augment(shift=1, elastic_alpha=4).tables((12, 12, 1))
    images = digit_like(2).astype(np.float32)
    scratch = np.zeros((1, K.augment.scratch_size(12, 12, 1, basis.shape[0])))  # float64
    with pytest.raises(ValueError, match="basis and scratch must have the images' dtype"):
        K.augment.augment_batch(images, np.uint64(1), params, basis.astype(np.float32), shape,
                                scratch)


def test_preview_cli_writes_a_picture(tmp_path):
    out = tmp_path / "grid.png"
    run = subprocess.run([sys.executable, "-m", "fastmlp", "augment-preview", "--dataset",
                          "digits", "--out", str(out), "--count", "4", "--interpolation",
                          "nearest"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000

