"""Write the synthetic benchmark to disk in the DAVIS 2017 layout.

::

    <root>/JPEGImages/480p/<seq>/00000.jpg      frames (the "480p" name is kept for
    <root>/Annotations/480p/<seq>/00000.png     layout compatibility; frames are smaller)
    <root>/Instances/480p/<seq>/00000.png       every instance, distractors included
    <root>/ImageSets/2017/{train,val}.txt
    <root>/meta.json                            generator, preset, seed, config: dmmlib's mark

The benchmark is rendered into a hidden folder beside ``root`` and moved into place when
complete, so an interrupted run leaves ``root`` as it was. ``meta.json`` marks a folder as
made by dmmlib: only such a folder is ever replaced (``--force``), and
:func:`ensure_synthetic` regenerates one only at its default place under ``data/``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

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
from dmmlib.fileio import atomic_path, atomic_write_text, exclusive, read_json_file, staged_folder
from dmmlib.profiles import PROFILES, active_profile

GENERATOR_NAME = "dmmlib.data.synthetic"
# the only entries generate_benchmark creates; --force replaces only these
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


def default_root(profile: str | None = None) -> Path:
    """``<data_dir()>/synthetic-<profile>``: the benchmark's own place, the only one :func:`ensure_synthetic` regenerates."""
    return data_dir() / f"synthetic-{active_profile() if profile is None else profile}"


def read_meta(root: str | os.PathLike) -> dict | None:
    """The benchmark's ``meta.json`` as a dict, or ``None`` if absent (not a benchmark made by dmmlib)."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    meta = read_json_file(path, "benchmark description")
    if not isinstance(meta, dict):
        raise DMMInputError(f"{path} is not a benchmark description; expected a JSON object")
    return meta


def is_complete(root: str | os.PathLike) -> bool:
    """True if ``root`` holds a finished synthetic benchmark (its ``meta.json`` names this generator)."""
    meta = read_meta(root)
    return meta is not None and meta.get("generator") == GENERATOR_NAME


def _is_empty_or_absent(root: Path) -> bool:
    return not os.path.lexists(root) or (root.is_dir() and not any(root.iterdir()))


def _check_replaceable(root: Path, force: bool) -> None:
    """Refuse to write into ``root`` unless it is new, empty, or (with ``force``) a benchmark made by dmmlib."""
    if os.path.lexists(root) and not root.is_dir():
        raise DMMInputError(f"output {root} exists and is not a folder")
    if _is_empty_or_absent(root):
        return
    if not force:
        raise DMMInputError(f"output folder {root} is not empty; refusing to overwrite it (pass --force to "
                            "replace a benchmark made by `data synth`)")
    if not is_complete(root):
        raise DMMInputError(f"output folder {root} holds files that are not a synthetic benchmark made by dmmlib "
                            f"(no meta.json of {GENERATOR_NAME}); refusing to replace them, even with --force: "
                            "choose another --out")


def _preset(config: SynthConfig) -> str | None:
    """The profile whose preset ``config`` is, or None for a custom one."""
    return next((p for p in PROFILES if synth_config_for_profile(p) == config), None)


def _render_into(root: Path, config: SynthConfig, seed: int, progress: bool) -> None:
    """Render every video, the split files and, last, ``meta.json`` into the (new) folder ``root``."""
    counts = {"train": config.train_videos, "val": config.val_videos}
    sequences: dict[str, dict] = {}
    with tqdm(total=sum(counts.values()), desc="synthetic videos", unit="video", disable=not progress) as bar:
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
        "preset": _preset(config),
        "seed": int(seed),
        "config": config.to_dict(),
        "resolution_folder": RESOLUTION,
        "splits": {split: [n for n, s in sequences.items() if s["split"] == split] for split in SPLITS},
        "sequences": sequences,
    }
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=1))


def generate_benchmark(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Render every video of ``config`` (default: the active profile's) into ``root``.

    ``root`` must be new or empty; with ``force`` it may also hold a benchmark made by
    dmmlib (its ``meta.json``), whose entries are then replaced while anything else in the
    folder stays. A folder of other files is refused even with ``force``. The benchmark is
    rendered beside ``root`` and moved in when complete: an error or an interruption leaves
    ``root`` as it was. Returns ``root`` as a Path.
    """
    config = synth_config_for_profile() if config is None else config
    root = Path(root)
    _check_replaceable(root, force)
    with staged_folder(root, replace=_OWN_ENTRIES) as staging:
        _render_into(staging, config, seed, progress)
    return root


def _matches(meta: dict, config: SynthConfig, seed: int) -> bool:
    return (
        meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("seed") == int(seed)
        and meta.get("config") == config.to_dict()
    )


def ensure_synthetic(root: str | os.PathLike | None = None, profile: str | None = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """Return the root of a synthetic benchmark, generating it where nothing would be lost.

    * ``root=None``: the profile's own folder :func:`default_root` (``data/synthetic-<profile>``),
      generated if missing or empty, and regenerated (with a warning) if it holds a benchmark
      made by dmmlib with another seed, preset or generator version;
    * an explicit ``root`` is used as it is when it holds a benchmark made by dmmlib (whatever
      its seed or sizes: a ``data synth --seed 7`` benchmark stays seed 7), and generated only
      when it does not exist or is empty.

    Any other non-empty folder is a :class:`DMMInputError`: it is never deleted or overwritten.
    """
    profile = active_profile() if profile is None else profile
    config = synth_config_for_profile(profile)
    managed = root is None
    root = default_root(profile) if managed else Path(root)
    if root.is_dir() and is_complete(root) and (not managed or _matches(read_meta(root), config, seed)):
        return root  # the common case: nothing to write, so no lock either
    with exclusive(root):
        return _ensure_locked(root, config, seed, progress, managed)


def _ensure_locked(root: Path, config: SynthConfig, seed: int, progress: bool, managed: bool) -> Path:
    if _is_empty_or_absent(root):
        return generate_benchmark(root, config, seed=seed, progress=progress)
    meta = read_meta(root) if root.is_dir() else None
    if meta is not None and meta.get("generator") == GENERATOR_NAME:
        if not managed or _matches(meta, config, seed):
            return root
        warnings.warn(f"regenerating {root}: it holds a benchmark of seed {meta.get('seed')} "
                      f"(preset {meta.get('preset')}), and this profile's is seed {seed} (preset {_preset(config)})",
                      stacklevel=3)
        return generate_benchmark(root, config, seed=seed, force=True, progress=progress)
    advice = ("it is never replaced: move it away, or set $DMM_DATA_DIR to another folder" if managed
              else "pass a folder made by `python -m dmmlib data synth --out DIR`, or a new or empty one")
    raise DMMInputError(f"{root} is not empty and does not hold a synthetic benchmark made by dmmlib "
                        f"(no meta.json of {GENERATOR_NAME}); {advice}")
