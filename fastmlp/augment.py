"""Data augmentation: on-the-fly distortions inside the compiled minibatch gather
(``fit(..., augment=Augment(...))``), and Nielsen's fixed expansion (``expand_mnist``).

``Augment`` draws per sample, from (seed, epoch, step): a shift of up to ``shift`` pixels in x
and y, a rotation of up to ``rotate`` degrees, a scaling by up to ``scale`` (0.1: 0.9x-1.1x),
and Simard's elastic distortion (uniform random displacements smoothed by a Gaussian of
``elastic_sigma`` pixels, times ``elastic_alpha``); each is off at 0, its default. Never a copy
of the training set: each minibatch is distorted as it is gathered. ``interpolation`` is
how the distorted image samples the original: ``"bilinear"`` (Simard's, the default) or
``"nearest"`` (torchvision's ``RandomAffine`` default: no new faint pixels at the strokes'
edges, so the images stay as sparse as the originals).
"""
import math

import numpy as np

from . import kernels as K


def _nonnegative(value, name, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (high is not None and value >= high):
        bound = ">= 0" if high is None else f"in [0, {high})"
        raise ValueError(f"Augment {name} must be a finite number {bound}, got {value!r}")
    return float(value)


class Augment:
    """Random distortions of training images, drawn anew for every sample of every epoch."""

    INTERPOLATIONS = ("bilinear", "nearest")

    def __init__(self, shift=0.0, rotate=0.0, scale=0.0, elastic_alpha=0.0, elastic_sigma=4.0,
                 interpolation="bilinear"):
        if interpolation not in self.INTERPOLATIONS:
            raise ValueError(f"Augment interpolation must be one of {self.INTERPOLATIONS}, got "
                             f"{interpolation!r}")
        self.interpolation = interpolation
        self.shift = _nonnegative(shift, "shift")
        self.rotate = _nonnegative(rotate, "rotate (degrees)", 180)
        self.scale = _nonnegative(scale, "scale", 1)
        self.elastic_alpha = _nonnegative(elastic_alpha, "elastic_alpha")
        self.elastic_sigma = _nonnegative(elastic_sigma, "elastic_sigma")
        if self.elastic_alpha and not self.elastic_sigma:
            raise ValueError("Augment elastic_sigma must be > 0 with elastic_alpha")

    @property
    def active(self):
        return any((self.shift, self.rotate, self.scale, self.elastic_alpha))

    def config(self):
        return {"shift": self.shift, "rotate": self.rotate, "scale": self.scale,
                "elastic_alpha": self.elastic_alpha, "elastic_sigma": self.elastic_sigma,
                "interpolation": self.interpolation}

    def __repr__(self):
        return "Augment(" + ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}"
                                      for k, v in self.config().items()) + ")"

    def tables(self, image_shape):
        """(params, elastic field basis, (h, w, c)) as the compiled step takes them."""
        params = K.augment.augment_params(self.shift, math.radians(self.rotate), self.scale,
                                          self.elastic_alpha, self.interpolation == "nearest")
        h, w = image_shape[:2]
        if (h + 3) * (w + 3) > 2 ** 24:  # float32 points index the pixels exactly up to this
            raise ValueError(f"Augment image_shape: at most 2**24 pixels with a 3-pixel border, "
                             f"got {h}x{w}")
        basis = K.augment.field_basis(h, w, self.elastic_sigma, self.elastic_alpha)
        return params, basis, np.asarray(image_shape, np.int64)

    def apply(self, X, image_shape, seed=0, epoch=0, step=0):
        """A distorted copy of the images X (n, h·w·c) — the ones fit would train on at that
        (seed, epoch, step) for a minibatch of exactly these rows — in the shape X was given:
        flat rows, (n, h, w) or (n, h, w, c) images."""
        import numba
        X = np.array(X, dtype=np.float64 if X.dtype == np.float64 else np.float32, copy=True)
        given = X.shape
        X = X.reshape(X.shape[0], -1)
        params, basis, shape = self.tables(image_shape)
        basis = basis.astype(X.dtype)
        scratch = np.zeros((numba.get_num_threads(),
                            K.augment.scratch_size(*shape, basis.shape[0])), X.dtype)
        key = np.uint64(K.stream_key(seed, epoch, step, K.augment.STREAM))  # as fit draws
        K.augment.augment_batch(X, key, params, basis, shape, scratch)
        return X.reshape(given)


def image_shape_of(net):
    """(h, w, c) of the images a network takes: its input_shape, or square 1-channel images."""
    shape = net.input_shape
    if len(shape) == 3:
        return shape
    side = int(round(math.sqrt(shape[0])))
    if side * side != shape[0]:
        raise ValueError(f"augment needs images: give the network input_shape=(h, w, c); "
                         f"{shape[0]} inputs are not a square image")
    return (side, side, 1)


def expand_mnist(X, y, image_shape=(28, 28)):
    """Nielsen's expansion: every image plus its four one-pixel shifts (up, down, left,
    right; the pixels that leave the frame are dropped, zeros come in), so 5x the samples.
    Returns (X_expanded, y_expanded), the originals first."""
    X = np.asarray(X)
    h, w = image_shape[:2]
    c = int(np.prod(image_shape[2:])) if len(image_shape) > 2 else 1
    if X.ndim != 2 or X.shape[1] != h * w * c:
        raise ValueError(f"X must be (n, {h * w * c}) images of shape {tuple(image_shape)}, got "
                         f"shape {X.shape}")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must hold one label per image ({X.shape[0]}), got shape {y.shape}")
    images = X.reshape(-1, h, w, c)
    out = np.zeros((5,) + images.shape, X.dtype)
    out[0] = images
    out[1, :, :-1] = images[:, 1:]   # up
    out[2, :, 1:] = images[:, :-1]   # down
    out[3, :, :, :-1] = images[:, :, 1:]  # left
    out[4, :, :, 1:] = images[:, :, :-1]  # right
    return out.reshape(5 * X.shape[0], -1), np.tile(y, 5)


def preview(X, augment, image_shape=(28, 28, 1), count=8, seed=0, out=None):
    """A grid: ``count`` originals on the top row, below them three rows of their distorted
    versions (three epochs' draws). Written to ``out`` (png) when given; returns the figure."""
    from .plotting import require_matplotlib
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h, w, c = image_shape
    X = np.asarray(X)[:count]
    rows = [X] + [augment.apply(X, image_shape, seed=seed, epoch=e) for e in range(3)]
    fig, axes = plt.subplots(len(rows), len(X), figsize=(1.2 * len(X), 1.25 * len(rows)),
                             squeeze=False)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            ax = axes[r][i]
            pic = img.reshape(h, w, c)
            ax.imshow(pic[:, :, 0] if c == 1 else np.clip(pic, 0, 1), cmap="gray_r" if c == 1
                      else None, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel("original" if r == 0 else f"epoch {r - 1}", fontsize=8)
    fig.suptitle(repr(augment), fontsize=8)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig
