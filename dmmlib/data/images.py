"""Reading video frames: the one home of frame decoding, with errors that name the file.

* :func:`read_frame` -- one image file as uint8 RGB ``[H, W, 3]`` (every loader, the
  tracker and the proposal network read frames through it);
* :func:`list_images` -- the frames of a folder, sorted by name;
* :func:`iter_frames` -- what a user may pass as "a video" (a folder, a video file, or
  an iterable of arrays, tensors or paths) as a stream of uint8 RGB frames;
* :func:`read_ahead` -- a stream of frames decoded by a background thread while the caller works.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from dmmlib.errors import DMMInputError, existing_file

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


# What each image suffix promises; the decoder (which reads the file's signature) must agree.
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


def _opened(path: Path, what: str) -> Image.Image:
    """``Image.open(path)`` (header only), checked: the file exists, decodes, and is what its suffix says."""
    existing_file(path, what, "an image file")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DMMInputError(f"{what} {path} is not a readable image: {error}") from None
    expected = SUFFIX_FORMATS.get(path.suffix.lower())
    if expected is not None and image.format != expected:
        image.close()
        raise DMMInputError(f"{what} {path} holds {image.format or 'unknown'} data but its name ends in "
                            f"{path.suffix}; expected a {expected} file (convert it, or name it after its format)")
    return image


@contextlib.contextmanager
def open_image(path: str | os.PathLike, what: str = "image") -> Iterator[Image.Image]:
    """The decoded image at ``path`` (PIL), or a :class:`DMMInputError` naming ``what`` and the file.

    Every image dmmlib reads -- frames, annotations, results -- is opened here. The file's
    content must match its suffix (:data:`SUFFIX_FORMATS`): a JPEG renamed ``.png`` is refused.
    """
    path = Path(path)
    image = _opened(path, what)
    try:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise DMMInputError(f"{what} {path} is not a readable image (truncated or corrupt?): {error}") from None
        yield image
    finally:
        image.close()


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]`` (greyscale is repeated, alpha dropped)."""
    with open_image(path, "frame") as image:
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        return np.asarray(rgb, dtype=np.uint8).copy()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image, read from its header only (checked like :func:`open_image`)."""
    with _opened(Path(path), "image") as image:
        width, height = image.size
    return height, width


def list_images(folder: str | os.PathLike, extensions: tuple[str, ...] = FRAME_EXTENSIONS,
                what: str = "frame folder", required: bool = False) -> list[Path]:
    """Image files directly in ``folder`` with one of ``extensions`` (any case), sorted by name.

    Hidden files are skipped. ``required``: an empty result is a :class:`DMMInputError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DMMInputError(f"{what} {folder} does not exist")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))
    if required and not files:
        raise DMMInputError(f"{what} {folder} holds no images; expected {', '.join(extensions)} files")
    return files


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


def read_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a video file (anything OpenCV opens) as uint8 RGB ``[H, W, 3]``, one at a time."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DMMInputError(f"frames {path} is neither a folder of images nor a video OpenCV can open")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(bgr[:, :, ::-1])  # OpenCV decodes BGR
    finally:
        capture.release()


def as_rgb_frame(frame, what: str = "frame") -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` from a path, a uint8 / float array ``[H, W, 3]`` or a float tensor ``[3, H, W]``."""
    if isinstance(frame, (str, os.PathLike)):
        return read_frame(frame)
    if hasattr(frame, "detach"):  # a torch tensor (torch itself is not needed to read frames)
        if frame.ndim == 3 and frame.shape[0] == 3 and frame.is_floating_point():
            frame = frame.permute(1, 2, 0)  # [3, H, W] in [0, 1]: scaled to uint8 below
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DMMInputError(f"{what} has shape {frame.shape}; expected an RGB image [H, W, 3]")
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.floating):
            raise DMMInputError(f"{what} has dtype {frame.dtype}; expected uint8 or float in [0, 1]")
        frame = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)
    return frame


def frame_file(frames, index: int) -> Path | None:
    """The file frame ``index`` of ``frames`` was read from (a folder or a list of paths), for error messages; else None."""
    if isinstance(frames, (str, os.PathLike)) and Path(frames).is_dir():
        files = list_images(frames)
        return files[index] if 0 <= index < len(files) else None
    if isinstance(frames, (list, tuple)) and 0 <= index < len(frames) and isinstance(frames[index], (str, os.PathLike)):
        return Path(frames[index])
    return None


def iter_frames(frames) -> tuple[Iterator[np.ndarray], int | None, list[str] | None]:
    """``(frames as uint8 RGB [H, W, 3], their number if known, their names if read from files)``.

    ``frames``: a folder of images, a video file, or an iterable (a generator is fine) of
    images (arrays, tensors or paths).
    """
    if isinstance(frames, (str, os.PathLike)):
        path = Path(frames)
        if path.is_dir():
            files = list_images(path, what="frames folder", required=True)
            return (read_frame(p) for p in files), len(files), [p.stem for p in files]
        if not path.exists():
            raise DMMInputError(f"frames {path} does not exist; expected a folder of images or a video file")
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        return read_video(path), (count or None), None
    if hasattr(frames, "shape") and len(frames.shape) == 3:
        raise DMMInputError("frames is a single image; expected a video (a folder, a video file or a sequence of images)")
    if not isinstance(frames, Iterable):
        raise DMMInputError(f"frames must be a folder, a video file or an iterable of images; got {type(frames).__name__}")
    total = len(frames) if hasattr(frames, "__len__") else None
    names = None
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(f, (str, os.PathLike)) for f in frames):
        names = [Path(f).stem for f in frames]  # a list of files keeps the files' names
    return (as_rgb_frame(f, f"frame {k}") for k, f in enumerate(frames)), total, names


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def read_ahead(frames: Iterator, depth: int = 2) -> Iterator:
    """``frames`` as they are, produced by a background thread up to ``depth`` items ahead.

    Decoding a JPEG (PIL and OpenCV release the GIL while they decode) then overlaps with what
    the caller does with the previous frame, e.g. a model step on a GPU. An error in the reader
    is raised in the caller, at the frame where it happened. ``depth < 1``: no thread.
    """
    if depth < 1:
        yield from frames
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failed(error))

    threading.Thread(target=read, name="dmmlib-read-ahead", daemon=True).start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()  # a consumer that stops early lets the reader finish
