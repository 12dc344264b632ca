"""Datasets: the synthetic VOS benchmark and loaders for DAVIS 2017, YouTube-VOS and SegTrack v2.

One home per idea: frames are decoded in :mod:`~dmmlib.data.images`, label masks
(and ``VOID_LABEL``) read and written in :mod:`~dmmlib.data.masks`, the DAVIS split
files parsed in :mod:`~dmmlib.data.davis`, dataset locations in :mod:`~dmmlib.data.paths`.

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

from dmmlib.exports import lazy_exports

_EXPORTS = {
    "SynthConfig": "dmmlib.data.synth_config",
    "SyntheticVideo": "dmmlib.data.synthetic",
    "synth_config_for_profile": "dmmlib.data.synth_config",
    "render_video": "dmmlib.data.synthetic",
    "generate_benchmark": "dmmlib.data.generate",
    "ensure_synthetic": "dmmlib.data.generate",
    "is_complete": "dmmlib.data.generate",
    "read_meta": "dmmlib.data.generate",
    "data_dir": "dmmlib.data.paths",
    "runs_dir": "dmmlib.data.paths",
    "VOID_LABEL": "dmmlib.data.masks",
    "read_label_png": "dmmlib.data.masks",
    "write_label_png": "dmmlib.data.masks",
    "as_label_mask": "dmmlib.data.masks",
    "object_ids": "dmmlib.data.masks",
    "read_split": "dmmlib.data.davis",
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
    "iter_frames": "dmmlib.data.images",
    "list_images": "dmmlib.data.images",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
