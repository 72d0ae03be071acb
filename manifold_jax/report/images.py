"""Images for the page: a small PNG encoder and the decoded images with their signed differences."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from manifold_jax.report.labels import rounded

DIFFERENCE_LEVELS = 65
"""Colours of the signed difference images: -scale .. 0 .. +scale in 64 equal steps."""


def png_bytes(pixels: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """An 8-bit PNG of ``pixels``: uint8 (H, W) grey levels, (H, W, 3) RGB, or (H, W)
    indices into ``palette`` (P, 3) uint8. No filter, deflate level 9."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        colour_type = 0 if palette is None else 3
    elif pixels.ndim == 3 and pixels.shape[2] == 3 and palette is None:
        colour_type = 2
    else:
        raise ValueError(f"pixels must be (H, W) or (H, W, 3) uint8 (palette only with (H, W)), got {pixels.shape}")
    height, width = pixels.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if palette is not None:
        parts.append(chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()))
    parts += [chunk(b"IDAT", zlib.compress(raw, 9)), chunk(b"IEND", b"")]
    return b"".join(parts)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_levels(image: np.ndarray) -> np.ndarray:
    """An image (H, W, C) in [0, 1] as uint8 levels round(255 clip(v, 0, 1)): (H, W) for C = 1, else (H, W, 3)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 1) or (H, W, 3), got shape {image.shape}")
    levels = np.round(255.0 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
    return levels[..., 0] if levels.shape[2] == 1 else levels


def difference_palette() -> np.ndarray:
    """(DIFFERENCE_LEVELS, 3) uint8: blue (negative) through white (zero) to red (positive)."""
    t = np.linspace(-1.0, 1.0, DIFFERENCE_LEVELS)[:, None]
    white, blue, red = np.array([255.0, 255.0, 255.0]), np.array([33.0, 102.0, 172.0]), np.array([178.0, 24.0, 43.0])
    colours = np.where(t < 0, white + (-t) * (blue - white), white + t * (red - white))
    return np.round(colours).astype(np.uint8)


def difference_indices(difference: np.ndarray, scale: float) -> np.ndarray:
    """Palette indices (H, W) of a signed difference (H, W, C), averaged over channels:
    round(m + m d / scale) clipped to 0..2m, with m = (DIFFERENCE_LEVELS - 1) / 2."""
    mid = (DIFFERENCE_LEVELS - 1) / 2
    d = np.asarray(difference, dtype=np.float64).mean(axis=-1)
    return np.clip(np.round(mid + mid * d / scale), 0, DIFFERENCE_LEVELS - 1).astype(np.uint8)


def image_frames(decoded: np.ndarray, original: np.ndarray) -> dict[str, Any]:
    """Decoded images (F, H, W, C) as PNG data URIs, and their signed differences to the original (H, W, C) on
    one colour scale for the run: +-scale, scale the largest channel-mean |difference| over the frames."""
    difference = decoded.astype(np.float64) - original[None].astype(np.float64)
    change = np.abs(difference.mean(axis=-1)).reshape(len(decoded), -1).max(axis=1)
    scale = float(change.max()) if change.max() > 0 else 1.0
    palette = difference_palette()
    return {
        "images": [data_uri(png_bytes(image_levels(image))) for image in decoded],
        "differences": [data_uri(png_bytes(difference_indices(d, scale), palette)) for d in difference],
        "difference_scale": float(f"{scale:.4g}"),
        "largest_change": rounded(change, 4),
    }
