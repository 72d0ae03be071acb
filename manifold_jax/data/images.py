"""Image files as model inputs: read, convert to the model's channels, check the size."""

from __future__ import annotations

import os

import numpy as np


def read_image(path: str | os.PathLike[str], size: int, channels: int) -> np.ndarray:
    """An image file (PNG, or anything matplotlib reads) as float32 (size, size, channels) in [0, 1].

    Colour images become grayscale for one-channel models (ITU-R 601 luma) and grayscale
    images are repeated for three-channel ones. The image must already have the model's
    size: resampling would change what is being explained, so it is refused.
    """
    import matplotlib.image as mpimg

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = np.asarray(mpimg.imread(path), dtype=np.float32)
    except Exception as exc:
        raise ValueError(f"could not read {path} as an image: {exc}") from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{path} is not an image with 1, 3 or 4 channels (shape {img.shape})")
    if img.max() > 1.0:  # integer formats are read as 0..255
        img = img / 255.0
    img = img[..., :3]
    if channels == 1 and img.shape[-1] == 3:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    elif channels == 3 and img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.shape[:2] != (size, size):
        raise ValueError(f"{path} is {img.shape[1]}x{img.shape[0]} pixels; the model expects {size}x{size}")
    return np.clip(img, 0.0, 1.0).astype(np.float32)
