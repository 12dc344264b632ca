"""Write the synthetic benchmark to disk in the DAVIS 2017 layout.

::

    <root>/JPEGImages/480p/<seq>/00000.jpg      frames (the "480p" name is kept for
    <root>/Annotations/480p/<seq>/00000.png     layout compatibility; frames are smaller)
    <root>/Instances/480p/<seq>/00000.png       every instance, distractors included
    <root>/ImageSets/2017/{train,val}.txt
    <root>/meta.json                            written last: its presence marks completion

Every file is written atomically, so an interrupted run leaves whole files and
no ``meta.json``; :func:`is_complete` and :func:`ensure_synthetic` detect that.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from dmmlib.data.davis import RESOLUTION
from dmmlib.data.masks import write_label_png
from dmmlib.data.paths import data_dir
from dmmlib.data.synth_config import SynthConfig, synth_config_for_profile
from dmmlib.data.synthetic import (
    GENERATOR_VERSION,
    SPLITS,
    SyntheticVideo,
    render_video,
)
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path, atomic_write_text
from dmmlib.profiles import active_profile

GENERATOR_NAME = "dmmlib.data.synthetic"
# the only entries generate_benchmark creates; --force removes only these
_OWN_ENTRIES = ("meta.json", "JPEGImages", "Annotations", "Instances", "ImageSets")


def sequence_name(split: str, index: int) -> str:
    return f"{split}-{index:04d}"


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _write_video(root: Path, name: str, video: SyntheticVideo, quality: int) -> None:
    for t in range(video.frames.shape[0]):
        stem = f"{t:05d}"
        _write_jpeg(root / "JPEGImages" / RESOLUTION / name / f"{stem}.jpg", video.frames[t], quality)
        write_label_png(root / "Annotations" / RESOLUTION / name / f"{stem}.png", video.labels[t])
        write_label_png(root / "Instances" / RESOLUTION / name / f"{stem}.png", video.instances[t])


def read_meta(root: str | os.PathLike) -> dict | None:
    """The benchmark's ``meta.json`` as a dict, or ``None`` if absent (an incomplete benchmark)."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DMMInputError(f"{path} is not readable JSON: {error}") from None


def is_complete(root: str | os.PathLike) -> bool:
    """True if ``root`` holds a finished synthetic benchmark (``meta.json`` is written last)."""
    meta = read_meta(root)
    return meta is not None and meta.get("generator") == GENERATOR_NAME


def _clear_own_entries(root: Path) -> None:
    # meta.json goes first so that a crash mid-way leaves the root marked incomplete
    for entry in _OWN_ENTRIES:
        path = root / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate_benchmark(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Render every video of ``config`` (default: the active profile's) into ``root``.

    Refuses a non-empty existing ``root`` unless ``force``; with ``force`` only the
    entries this function writes are removed first. Returns ``root`` as a Path.
    """
    config = synth_config_for_profile() if config is None else config
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DMMInputError(f"output {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise DMMInputError(f"output folder {root} is not empty; refusing to overwrite it (pass --force to replace it)")
        _clear_own_entries(root)
    root.mkdir(parents=True, exist_ok=True)

    counts = {"train": config.train_videos, "val": config.val_videos}
    sequences: dict[str, dict] = {}
    bar = tqdm(total=sum(counts.values()), desc="synthetic videos", unit="video", disable=not progress)
    with bar:
        for split in SPLITS:
            names = []
            for index in range(counts[split]):
                name = sequence_name(split, index)
                video = render_video(config, seed=seed, index=index, split=split)
                _write_video(root, name, video, config.jpeg_quality)
                sequences[name] = {"split": split, **video.info}
                names.append(name)
                bar.update(1)
            atomic_write_text(root / "ImageSets" / "2017" / f"{split}.txt", "".join(f"{n}\n" for n in names))
    meta = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "config": config.to_dict(),
        "resolution_folder": RESOLUTION,
        "splits": {split: [n for n, s in sequences.items() if s["split"] == split] for split in SPLITS},
        "sequences": sequences,
    }
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=1))
    return root


def _matches(meta: dict, config: SynthConfig, seed: int) -> bool:
    return (
        meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("seed") == int(seed)
        and meta.get("config") == config.to_dict()
    )


def ensure_synthetic(root: str | os.PathLike | None = None, profile: str | None = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """Return the root of the synthetic benchmark for ``profile``, generating it if missing or stale.

    Default root: ``<data_dir()>/synthetic-<profile>``. A root that holds an
    incomplete benchmark (no ``meta.json``) or one made by another generator
    version, seed or config is regenerated; a non-empty folder that is not a
    synthetic benchmark at all is an error rather than something to delete.
    """
    profile = active_profile() if profile is None else profile
    config = synth_config_for_profile(profile)
    root = data_dir() / f"synthetic-{profile}" if root is None else Path(root)
    with _exclusive(root.parent / f".{root.name}.lock"):
        return _ensure_locked(root, config, seed, progress)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two processes asking for the same benchmark do not write it at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; generation stays correct for a single process
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_locked(root: Path, config: SynthConfig, seed: int, progress: bool) -> Path:
    meta = read_meta(root) if root.is_dir() else None
    if meta is not None and meta.get("generator") == GENERATOR_NAME and _matches(meta, config, seed):
        return root
    if root.is_dir() and any(root.iterdir()):
        foreign = [p.name for p in root.iterdir() if p.name not in _OWN_ENTRIES and not p.name.startswith(".")]
        if foreign or (meta is not None and meta.get("generator") != GENERATOR_NAME):
            raise DMMInputError(
                f"{root} is not empty and does not hold a synthetic benchmark (found {foreign or ['meta.json']}); "
                "choose another root or empty it"
            )
    return generate_benchmark(root, config, seed=seed, force=True, progress=progress)
