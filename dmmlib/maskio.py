"""Reading and writing label masks as DAVIS-style 8-bit palette PNGs.

A label mask is a ``uint8`` array ``[H, W]``: 0 background, ``k`` object ``k``,
255 void (DAVIS). Every dataset loader, the evaluator and the tracker read and
write masks through these two functions, so all share the same checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path


def davis_palette() -> list[int]:
    """The 256-colour palette of the DAVIS annotations (the PASCAL VOC colour map), flat RGB."""
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = davis_palette()


def read_label_png(path: str | os.PathLike, *, allow_binary_rgb: bool = False) -> np.ndarray:
    """Read a palette (``P``) or greyscale (``L``/``1``) PNG as a ``uint8`` label array ``[H, W]``.

    Palette PNGs give their palette indices, as the official DAVIS code does.
    An RGB(A) image is an error: its colours are not labels. With
    ``allow_binary_rgb=True`` (SegTrack v2 ships some ground truth as RGB), an
    RGB image is accepted and thresholded to {0, 1} on its maximum channel.
    """
    path = Path(path)
    if not path.is_file():
        raise DMMInputError(f"annotation {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L"):
                return np.array(image, dtype=np.uint8)
            if mode == "1":
                return np.array(image, dtype=np.uint8)
            if mode in ("I;16", "I"):
                array = np.array(image)
                if array.max(initial=0) > 255:
                    raise DMMInputError(f"annotation {path} has label values above 255; expected 8-bit labels")
                return array.astype(np.uint8)
            if mode in ("RGB", "RGBA", "LA") and allow_binary_rgb:
                array = np.array(image.convert("RGB"))
                return (array.max(axis=2) > 127).astype(np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DMMInputError(f"annotation {path} is not a readable image: {error}") from None
    raise DMMInputError(
        f"annotation {path} is a {mode} image; expected an 8-bit palette (P) or greyscale (L) PNG of object ids"
    )


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write ``labels`` (``[H, W]`` integers in 0..255) as a DAVIS palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DMMInputError(f"labels for {path} must be a 2-D array [H, W]; got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise DMMInputError(f"labels for {path} must lie in 0..255; got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
