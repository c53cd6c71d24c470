"""Turning a picture of a digit into a network input, the way MNIST itself was made:
grayscale, dark background, crop to the digit, fit into 20x20 keeping the aspect ratio,
then place it in 28x28 so that its centre of mass is at the centre.
"""
from pathlib import Path

import numpy as np

from .errors import DataFormatError


def load_image(path, side=None):
    """A 2-D float array in [0, 1] from a PNG/JPG/... (Pillow) or a .npy file. Transparent
    pixels are composited on white, as a drawing app shows them. A .npy array must be an image
    of ``side`` x ``side`` pixels (or its flat row) when ``side`` is given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from None
        return image_from_array(arr, path, side)
    return image_from_bytes(path.read_bytes(), path)


def image_from_array(arr, where, side=None):
    """A 2-D float array in [0, 1] from an array of pixels (0-1 or 0-255): (h, w), (h, w, 1),
    (h, w, 3 or 4), or one flat square row; ``side`` x ``side`` when ``side`` is given."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DataFormatError(f"{where}: expected a numeric array, got dtype {arr.dtype}")
    if side is not None and arr.shape not in ((side, side), (side * side,), (side, side, 1)):
        raise DataFormatError(f"{where}: an array of shape {arr.shape}; the model takes "
                              f"images of shape ({side}, {side}), ({side * side},) or "
                              f"({side}, {side}, 1)")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 1:
        side = int(round(np.sqrt(arr.size)))
        if side * side != arr.size:
            raise DataFormatError(f"{where}: a 1-D array of {arr.size} values is not a square "
                                  f"image")
        arr = arr.reshape(side, side)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or arr.size == 0:
        raise DataFormatError(f"{where}: expected a 2-D image, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataFormatError(f"{where}: contains NaN or infinite values")
    if arr.max() > 1:
        arr = arr / 255.0
    return np.clip(arr, 0, 1)


MAX_PIXELS = 4096 * 4096  # a decoded picture larger than this is refused (decompression bombs)


def image_from_bytes(data, where):
    """A 2-D float array in [0, 1] from the bytes of a PNG/JPG/... picture (Pillow);
    transparent pixels composited on white."""
    import io

    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataFormatError(f"{where}: a picture of {im.width}x{im.height} pixels is "
                                      f"too large (at most {MAX_PIXELS} pixels)")
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                gray = Image.alpha_composite(white, rgba).convert("L")
            else:
                gray = im.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataFormatError(f"{where}: not a readable image ({exc})") from None
    return np.asarray(gray, dtype=np.float64) / 255.0


def mnist_style(image, side=28, box=20, threshold=0.1):
    """The MNIST preprocessing of a 2-D image in [0, 1]; returns a (side*side,) vector."""
    from PIL import Image
    img = np.asarray(image, dtype=np.float64)
    background = float(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))
    if background > 0.5:  # dark digit on a light background: make it light on dark
        img, background = 1.0 - img, 1.0 - background
    img = np.clip(img - background, 0, None)
    if img.max() <= 0:
        raise ValueError("the image is blank: no digit found")
    img = img / img.max()
    rows = np.flatnonzero((img > threshold).any(axis=1))
    cols = np.flatnonzero((img > threshold).any(axis=0))
    img = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = img.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray((img * 255).astype(np.uint8)).resize((new_w, new_h),
                                                                     Image.Resampling.LANCZOS)
    digit = np.asarray(resized, dtype=np.float64) / 255.0
    canvas = np.zeros((side, side))
    total = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(new_h)) / total
    cx = (digit.sum(axis=0) @ np.arange(new_w)) / total
    top = int(round((side - 1) / 2 - cy))
    left = int(round((side - 1) / 2 - cx))
    top = min(max(top, 0), side - new_h)
    left = min(max(left, 0), side - new_w)
    canvas[top:top + new_h, left:left + new_w] = digit
    return canvas.reshape(-1)


def uci_digits_style(image, side=8, block=4):
    """The preprocessing of the UCI 8x8 digits (scikit-learn's ``load_digits``): the digit fitted
    into a (side*block)^2 bitmap, thresholded, then the set pixels of each block x block square
    counted and scaled to [0, 1]."""
    big = mnist_style(image, side=side * block, box=side * block).reshape(side * block, -1)
    bits = (big > 0.5).astype(np.float64)
    return bits.reshape(side, block, side, block).sum(axis=(1, 3)).reshape(-1) / (block * block)


def prepare(path, n_features, style="mnist"):
    """Read an image file and make it a network input of n_features values, prepared the way
    the model's training images were (``style``: "mnist" or "uci-digits")."""
    return to_input(load_image(path, square_side(n_features)), n_features, style, path)


def square_side(n_features):
    side = int(round(np.sqrt(n_features)))
    if side * side != n_features:
        raise ValueError(f"the model takes {n_features} inputs, not a square image")
    return side


def to_input(image, n_features, style, where):
    """A 2-D image in [0, 1] as a network input of n_features values, prepared the way the
    model's training images were (``style``: "mnist" or "uci-digits")."""
    side = square_side(n_features)
    try:
        if style == "uci-digits":
            return uci_digits_style(image, side=side)
        return mnist_style(image, side=side, box=max(1, round(side * 20 / 28)))
    except ValueError as exc:
        raise DataFormatError(f"{where}: {exc}") from None


def style_of(net):
    """How the model's training images were made: "uci-digits" for the 8x8 fallback data set's
    models, else "mnist"."""
    from .datasets import FALLBACK
    return "uci-digits" if net.train_config.get("dataset") == FALLBACK else "mnist"
