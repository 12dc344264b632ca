"""Datasets: the synthetic VOS benchmark and loaders for DAVIS 2017, YouTube-VOS and SegTrack v2.

Loaders return lazily read :class:`VOSSequence` objects with numpy arrays
(frames uint8 ``[H, W, 3]``, labels uint8 ``[H, W]``); :class:`ClipSampler` and
:class:`ClipDataset` cut random augmented training clips (numpy, or torch
tensors ``[T, 3, H, W]`` / ``[T, H, W]``). Submodules load on first use, so
``import dmmlib.data`` imports neither torch nor scikit-image.

Typical use::

    from dmmlib.data import ClipDataset, ClipSampler, DavisDataset, ensure_synthetic

    root = ensure_synthetic()                      # data/synthetic-<profile>, made once
    val = DavisDataset(root, split="val")          # also real DAVIS 2017: DavisDataset("data/DAVIS")
    for record in val.sequence(val.names[0]):      # streams FrameRecord(index, name, image, labels, void)
        ...
    clips = ClipDataset(ClipSampler(DavisDataset(root, "train"), clip_length=3, seed=0, size=(120, 216)),
                        length=256)                # items: frames [T, 3, H, W] float, labels [T, H, W] long
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SynthConfig": "dmmlib.data.synthetic",
    "SyntheticVideo": "dmmlib.data.synthetic",
    "synth_config_for_profile": "dmmlib.data.synthetic",
    "render_video": "dmmlib.data.synthetic",
    "generate_benchmark": "dmmlib.data.generate",
    "ensure_synthetic": "dmmlib.data.generate",
    "is_complete": "dmmlib.data.generate",
    "read_meta": "dmmlib.data.generate",
    "data_dir": "dmmlib.data.generate",
    "ObjectInfo": "dmmlib.data.sequence",
    "FrameRecord": "dmmlib.data.sequence",
    "VOSSequence": "dmmlib.data.sequence",
    "VOSDataset": "dmmlib.data.sequence",
    "DavisDataset": "dmmlib.data.davis",
    "YouTubeVOSDataset": "dmmlib.data.youtube_vos",
    "SegTrackV2Dataset": "dmmlib.data.segtrack",
    "AffineAugment": "dmmlib.data.clips",
    "ClipSampler": "dmmlib.data.clips",
    "ClipDataset": "dmmlib.data.clips",
    "read_frame": "dmmlib.data.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dmmlib.data' has no attribute {name!r}")


def __dir__():
    return __all__
