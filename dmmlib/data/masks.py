"""Label masks: the one home of ``VOID_LABEL`` and of reading / writing DAVIS palette PNGs.

A label mask is a ``uint8`` array ``[H, W]``: 0 background, ``k`` object ``k``,
255 void (DAVIS). Every dataset loader, the evaluator and the tracker read and
write masks through :func:`read_label_png` / :func:`write_label_png`, so all share
the same checks; :func:`as_label_mask` turns what a user passes (a path, an
array, a tensor) into one, and :func:`object_ids` lists the objects it holds.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from dmmlib.data.images import open_image
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path

BACKGROUND_LABEL = 0
VOID_LABEL = 255  # DAVIS marks ambiguous pixels with 255; they belong to no object


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


def read_label_png(path: str | os.PathLike, *, allow_binary_rgb: bool = False, what: str = "annotation") -> np.ndarray:
    """Read a palette (``P``) or greyscale (``L``/``1``) PNG as a ``uint8`` label array ``[H, W]``.

    Palette PNGs give their palette indices, as the official DAVIS code does.
    An RGB(A) image is an error: its colours are not labels. With
    ``allow_binary_rgb=True`` (SegTrack v2 ships some ground truth as RGB), an
    RGB image is accepted and thresholded to {0, 1} on its maximum channel. ``what`` names
    the file in errors (``"--mask"``, ``"result"``).
    """
    with open_image(path, what) as image:
        mode = image.mode
        if mode in ("P", "L", "1"):
            return np.array(image, dtype=np.uint8)
        if mode in ("I;16", "I"):
            array = np.array(image)
            if array.max(initial=0) > 255:
                raise DMMInputError(f"{what} {path} has label values above 255; expected 8-bit labels")
            return array.astype(np.uint8)
        if mode in ("RGB", "RGBA", "LA") and allow_binary_rgb:
            return (np.array(image.convert("RGB")).max(axis=2) > 127).astype(np.uint8)
    raise DMMInputError(
        f"{what} {path} is a {mode} image; expected an 8-bit palette (P) or greyscale (L) PNG of object ids"
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


def object_ids(labels: np.ndarray) -> list[int]:
    """The object ids of a label mask, sorted: every value but 0 (background) and 255 (void)."""
    return [int(v) for v in np.unique(np.asarray(labels)) if v not in (BACKGROUND_LABEL, VOID_LABEL)]


def as_label_mask(mask, what: str = "mask") -> np.ndarray:
    """A label mask uint8 ``[H, W]`` from a PNG path, an integer / bool array or a tensor; ``what`` names it in errors."""
    if isinstance(mask, (str, os.PathLike)):
        return read_label_png(mask, what=what)
    if hasattr(mask, "cpu"):  # a torch tensor
        mask = mask.cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DMMInputError(f"{what} has shape {mask.shape}; expected a label mask [H, W] of object ids")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    elif not np.issubdtype(mask.dtype, np.integer):
        raise DMMInputError(f"{what} has dtype {mask.dtype}; expected integer object ids")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DMMInputError(f"{what} must hold ids in 0..255 (0 background, 255 void)")
    return mask.astype(np.uint8)
