"""Reading video frames and listing image folders, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dmmlib.errors import DMMInputError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]`` (greyscale is repeated, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DMMInputError(f"frame {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DMMInputError(f"frame {path} is not a readable image: {error}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise DMMInputError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DMMInputError(f"image {path} is not a readable image: {error}") from None
    return height, width


def list_images(folder: str | os.PathLike, extensions: tuple[str, ...] = FRAME_EXTENSIONS,
                what: str = "frame folder") -> list[Path]:
    """Image files directly in ``folder`` with one of ``extensions`` (any case), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DMMInputError(f"{what} {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def check_consecutive(paths: list[Path], folder: Path, step: int = 1) -> None:
    """Raise if numerically named frames skip a number (``00000, 00001, 00003`` lacks ``00002``)."""
    stems = [p.stem for p in paths]
    if not stems or not all(s.isdigit() for s in stems):
        return
    numbers = [int(s) for s in stems]
    for previous, current in zip(numbers[:-1], numbers[1:]):
        if current != previous + step:
            width = len(stems[0])
            missing = str(previous + step).zfill(width)
            raise DMMInputError(
                f"frame {folder / missing}{paths[0].suffix} is missing: frames jump from {previous} to {current} in {folder}"
            )
