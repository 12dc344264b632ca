"""Prediction and scoring on YouTube-VOS and SegTrack v2 (DAVIS 2017 lives in tracking_predict / evaluation).

``python -m dmmlib predict --dataset youtube-vos|segtrack --root DIR ...`` and
``python -m dmmlib evaluate --dataset youtube-vos|segtrack --root DIR ...`` end here.

YouTube-VOS (Sec. 4, Table 1)
    Objects may enter after the first frame: each object's first annotated frame
    gives its template (``meta.json`` names it), and :func:`dmmlib.tracking.track`
    adds it to the tracked set there (``later_masks``). With ``valid_all_frames``
    beside the split, every 30 fps frame is tracked; results are written for the
    6 fps frames of ``<split>/JPEGImages`` only, in the submission layout
    ``<out>/Annotations/<video>/<frame>.png`` (palette PNGs; zip ``Annotations``
    for the evaluation server). The official validation ground truth is not public;
    :func:`evaluate_youtube_vos` scores a *held-out split with ground truth* in the
    train layout (the paper's "train-val" split of the training set, Sec. 4.2):
    J and F per object, seen / unseen by category, G = mean(J_S, J_U, F_S, F_U).

SegTrack v2 (Table 3)
    Every object is tracked from its first non-empty mask. Results are label PNGs
    ``<out>/<seq>/<frame>.png`` (object k = ground-truth folder k).
    :func:`evaluate_segtrack` gives mIoU* (per frame, then over frames) and mIoU†
    (per instance, then over instances) over the frames *after* an instance's
    template frame in which its ground truth is non-empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_write_text, refuse_overwrite

DATASETS = ("davis", "youtube-vos", "segtrack")


# ---------------------------------------------------------------------------- plans


@dataclass
class VideoPlan:
    """What tracking one video needs: frame files, frame-0 labels, later templates, which results to write."""

    name: str
    frame_paths: list[Path]
    first_mask: np.ndarray  # uint8 [H, W]: the objects whose template is frame 0
    later_masks: dict[int, np.ndarray]  # frame index -> uint8 [H, W] of the objects starting there
    write_names: list[str] | None  # frame stems to write (None: all)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]


def _plan_from_sequence(sequence, write_names=None) -> VideoPlan:
    """Templates of a loaded sequence grouped by their frame: frame 0's become the first mask."""
    height, width = sequence.frame_size(0)
    by_frame: dict[int, np.ndarray] = {}
    for object_id, (index, mask) in sequence.templates().items():
        labels = by_frame.setdefault(index, np.zeros((height, width), np.uint8))
        labels[mask] = object_id
    if not by_frame:
        raise DMMInputError(f"video {sequence.name!r} has no object to track")
    first = by_frame.pop(0, np.zeros((height, width), np.uint8))
    return VideoPlan(sequence.name, list(sequence.frame_paths), first, by_frame, write_names)


def youtube_vos_plans(root, split: str = "valid", all_frames: bool | None = None,
                      videos: list[str] | None = None) -> list[VideoPlan]:
    """One :class:`VideoPlan` per video of ``<root>/<split>``.

    ``all_frames``: ``None`` uses ``<split>_all_frames`` when it exists, ``False`` tracks
    the 6 fps frames only. Results are always written for the 6 fps frames.
    """
    from dmmlib.data import YouTubeVOSDataset

    dataset = YouTubeVOSDataset(root, split, all_frames_root=False if all_frames is False else None)
    if all_frames and dataset.all_frames_root is None:
        raise DMMInputError(f"all_frames=True but {Path(root) / (split + '_all_frames')} does not exist")
    names = dataset.names if videos is None else list(videos)
    plans = []
    for name in names:
        sequence = dataset.sequence(name)
        six_fps = sorted(p.stem for p in (dataset.split_dir / "JPEGImages" / name).iterdir()
                         if p.suffix.lower() in (".jpg", ".jpeg"))
        plans.append(_plan_from_sequence(sequence, six_fps))
    return plans


def segtrack_plans(root, sequences: list[str] | None = None) -> list[VideoPlan]:
    """One :class:`VideoPlan` per SegTrack v2 sequence (all frames written)."""
    from dmmlib.data import SegTrackV2Dataset

    dataset = SegTrackV2Dataset(root)
    names = dataset.names if sequences is None else list(sequences)
    return [_plan_from_sequence(dataset.sequence(n)) for n in names]


# ---------------------------------------------------------------------------- prediction


def _proposals_by_name(cache, net, sequence: str, names: list[str]):
    """(frame index, frame) -> FrameProposals, reading ``cache`` by frame *name* (6 fps names are not indices)."""
    def source(index: int, frame: np.ndarray):
        found = cache.get(sequence, names[index]) if cache is not None else None
        if found is not None:
            return found
        if net is None:
            raise DMMInputError(f"proposal cache {cache.root} has no proposals for {sequence}/{names[index]}; "
                                f"pass --proposal-checkpoint to compute missing frames")
        return net.propose(frame)
    return source


def predict_plans(plans: list[VideoPlan], out_dir, model, proposals_cache=None, proposal_net=None,
                  device: str = "auto", force: bool = False, progress: bool = True,
                  size: tuple[int, int] | None = None) -> list[str]:
    """Track every planned video into ``out_dir/<video>/<frame>.png``; returns the videos written."""
    from tqdm.auto import tqdm

    from dmmlib.maskio import write_label_png
    from dmmlib.tracking import refuse_existing_pngs, track

    out_dir = Path(out_dir)
    for plan in plans:
        refuse_existing_pngs(out_dir / plan.name, force)
    for plan in tqdm(plans, desc="predict", unit="video", disable=not progress):
        names = plan.frame_names
        source = _proposals_by_name(proposals_cache, proposal_net, plan.name, names)
        wanted = None if plan.write_names is None else set(plan.write_names)
        labels = track(plan.frame_paths, plan.first_mask, model=model, proposals=source, device=device,
                       progress=False, sequence=plan.name, size=size, later_masks=plan.later_masks)
        for name, label in zip(names, labels):
            if wanted is None or name in wanted:
                write_label_png(out_dir / plan.name / f"{name}.png", label)
    return [plan.name for plan in plans]


def plan_dataset(dataset: str, root, out_dir, split: str = "valid", videos: list[str] | None = None,
                 force: bool = False) -> tuple[list[VideoPlan], Path]:
    """Check inputs and outputs before anything runs: (plans, folder the videos' results go to)."""
    from dmmlib.tracking import refuse_existing_pngs

    if dataset == "youtube-vos":
        plans = youtube_vos_plans(root, split, videos=videos)
        target = Path(out_dir) / "Annotations"
    elif dataset == "segtrack":
        plans = segtrack_plans(root, videos)
        target = Path(out_dir)
    else:
        raise DMMInputError(f"dataset={dataset!r}; expected 'youtube-vos' or 'segtrack' (DAVIS: predict_split)")
    for plan in plans:
        refuse_existing_pngs(target / plan.name, force)
    return plans, target


def predict_dataset(dataset: str, root, out_dir, model, split: str = "valid", proposals_cache=None,
                    proposal_net=None, device: str = "auto", force: bool = False, videos: list[str] | None = None,
                    progress: bool = True, size: tuple[int, int] | None = None) -> list[str]:
    """YouTube-VOS: ``out_dir/Annotations/<video>/<frame>.png`` (submission layout); SegTrack v2: ``out_dir/<seq>/``."""
    plans, target = plan_dataset(dataset, root, out_dir, split, videos, force)
    return predict_plans(plans, target, model, proposals_cache, proposal_net, device, force, progress, size)


# ---------------------------------------------------------------------------- YouTube-VOS scoring


def _results_folder(results_dir: Path, name: str) -> Path:
    """``<results>/Annotations/<video>`` (submission layout) or ``<results>/<video>``."""
    for folder in (results_dir / "Annotations" / name, results_dir / name):
        if folder.is_dir():
            return folder
    raise DMMInputError(f"no results for video {name!r}: expected {results_dir / 'Annotations' / name}/ "
                        f"or {results_dir / name}/")


def _read_result(folder: Path, stem: str, shape: tuple[int, int]) -> np.ndarray:
    from dmmlib.maskio import read_label_png

    path = folder / f"{stem}.png"
    if not path.is_file():
        raise DMMInputError(f"result frame {path} is missing")
    labels = read_label_png(path)
    if labels.shape != shape:
        raise DMMInputError(f"result {path} is {labels.shape[1]}x{labels.shape[0]} (WxH); expected {shape[1]}x{shape[0]}")
    return labels


def seen_categories_of(root, split: str = "train") -> set[str]:
    """The categories of ``<root>/<split>/meta.json`` (the training set's: "seen")."""
    path = Path(root) / split / "meta.json"
    if not path.is_file():
        raise DMMInputError(f"{path} does not exist; seen categories are those of the training split's meta.json")
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {str(o["category"]) for v in meta.get("videos", {}).values() for o in v.get("objects", {}).values()
            if o.get("category") is not None}


def evaluate_youtube_vos(root, split: str, results_dir, seen_categories=None, seen_split: str = "train") -> dict:
    """J / F per object on a split whose every 6 fps frame is annotated; seen / unseen; G.

    Frames scored for an object: the annotated frames *after* its template frame (the
    first one it appears in), up to the last, frames where it is absent included (J = F
    = 1 when the prediction is empty too, as DAVIS). Per-object means are grouped by
    whether the object's category is in ``seen_categories`` (default: the categories of
    ``<root>/<seen_split>/meta.json``) and combined by :func:`dmmlib.metrics.youtube_vos_scores`.
    Returns ``{"J_seen", "J_unseen", "F_seen", "F_unseen", "G", "objects": [...]}`` (NaN for an empty group).
    """
    from dmmlib.data import YouTubeVOSDataset
    from dmmlib.metrics import boundary_f, jaccard, youtube_vos_scores

    results_dir = Path(results_dir)
    dataset = YouTubeVOSDataset(root, split, all_frames_root=False)
    seen = seen_categories_of(root, seen_split) if seen_categories is None else set(seen_categories)
    rows = []
    for name in dataset.names:
        sequence = dataset.sequence(name)
        folder = _results_folder(results_dir, name)
        for obj in sequence.objects:
            frames = [i for i in sequence.annotated_indices if i > obj.first_frame]
            if not frames:
                continue  # an object that only exists in the last annotated frame scores nothing
            gt = np.stack([sequence.labels(i) == obj.id for i in frames])
            pred = np.stack([_read_result(folder, sequence.frame_names[i], gt.shape[1:]) == obj.id for i in frames])
            j, f = np.atleast_1d(jaccard(gt, pred)), np.atleast_1d(boundary_f(gt, pred))
            rows.append({"video": name, "object": obj.id, "category": obj.category,
                         "seen": obj.category in seen, "frames": len(frames),
                         "J": float(np.nanmean(j)), "F": float(np.nanmean(f))})
    if not rows:
        raise DMMInputError(f"split {split!r} of {root} has no object with an annotated frame after its first one")
    scores = youtube_vos_scores([(r["category"], r["J"], r["F"]) for r in rows], seen)
    return {"J_seen": scores.j_seen, "J_unseen": scores.j_unseen, "F_seen": scores.f_seen,
            "F_unseen": scores.f_unseen, "G": scores.overall, "objects": rows}


# ---------------------------------------------------------------------------- SegTrack v2 scoring


def evaluate_segtrack(root, results_dir, sequences: list[str] | None = None) -> dict:
    """mIoU* and mIoU† (Table 3) of label-PNG results ``<results>/<seq>/<frame>.png``.

    Frames that count for an instance: those after its template frame (its first
    non-empty mask; frame 0 for every real SegTrack v2 object) in which its ground
    truth is non-empty. mIoU*: mean over those instances per frame, then over all
    frames of all sequences; mIoU†: mean per instance, then over all instances.
    Returns ``{"mIoU*", "mIoU†", "per_instance": [...], "frames": count}``.
    """
    from dmmlib.data import SegTrackV2Dataset
    from dmmlib.data.segtrack import read_binary_mask
    from dmmlib.metrics import miou_per_frame, miou_per_instance, segtrack_ious

    results_dir = Path(results_dir)
    dataset = SegTrackV2Dataset(root)
    tables, per_instance, counted_frames = [], [], 0
    for name in dataset.names if sequences is None else sequences:
        sequence = dataset.sequence(name)
        folder = _results_folder(results_dir, name)
        indices = sequence.annotated_indices
        ids = sequence._object_ids  # the numbered ground-truth folders (1 for a single object)
        gt = np.stack([np.stack([read_binary_mask(sequence.annotations[i][k]) for i in indices])
                       for k in range(len(ids))])  # [K, T, H, W], each object's own mask (overlaps kept)
        pred_labels = np.stack([_read_result(folder, sequence.frame_names[i], gt.shape[2:]) for i in indices])
        pred = np.stack([pred_labels == object_id for object_id in ids])
        present = gt.reshape(len(ids), len(indices), -1).any(axis=2)
        for k in range(len(ids)):
            seen_at = np.flatnonzero(present[k])
            if seen_at.size:
                present[k, : seen_at[0] + 1] = False  # the template frame is given, not predicted
        ious = segtrack_ious(gt, pred, exclude_first=True, present=present)
        tables.append(ious)
        counted_frames += int((~np.isnan(ious)).any(axis=0).sum())
        for k, object_id in enumerate(ids):
            values = ious[k][~np.isnan(ious[k])]
            per_instance.append({"sequence": name, "object": object_id, "frames": int(values.size),
                                 "IoU": float(values.mean()) if values.size else math.nan})
    return {"mIoU*": miou_per_frame(tables), "mIoU†": miou_per_instance(tables),
            "per_instance": per_instance, "frames": counted_frames}


# ---------------------------------------------------------------------------- command-line glue


def _finite(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def write_scores_json(scores: dict, path, force: bool = False) -> Path:
    path = Path(path)
    refuse_overwrite(path, force, what="JSON file")
    clean = json.loads(json.dumps(scores, default=str).replace("NaN", "null"))
    atomic_write_text(path, json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    return path


def print_youtube_vos(scores: dict) -> None:
    def fmt(v):
        return "  nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"

    print("   J_S    J_U    F_S    F_U      G   (x100; seen = categories of the training split)")
    print("  ".join(fmt(scores[k]) for k in ("J_seen", "J_unseen", "F_seen", "F_unseen", "G")))
    print(f"\n{'video':<16} {'obj':>3} {'category':<12} {'seen':<5} {'frames':>6} {'J':>6} {'F':>6}")
    for r in scores["objects"]:
        print(f"{r['video']:<16} {r['object']:>3} {str(r['category']):<12} {str(r['seen']):<5} {r['frames']:>6} "
              f"{r['J']:6.3f} {r['F']:6.3f}")


def print_segtrack(scores: dict) -> None:
    print(f"mIoU* {100 * scores['mIoU*']:.1f}   mIoU† {100 * scores['mIoU†']:.1f}   "
          f"(x100; {scores['frames']} frames: after each instance's template frame, where its mask is non-empty)")
    print(f"\n{'sequence':<20} {'obj':>3} {'frames':>6} {'IoU':>6}")
    for r in scores["per_instance"]:
        print(f"{r['sequence']:<20} {r['object']:>3} {r['frames']:>6} {r['IoU']:6.3f}")


def evaluate_main(args) -> int:
    """``evaluate --dataset youtube-vos|segtrack``."""
    if args.json:
        refuse_overwrite(args.json, args.force, what="JSON file")
    if args.dataset == "youtube-vos":
        seen = None
        if args.seen_categories:
            source = Path(args.seen_categories)
            text = source.read_text(encoding="utf-8") if source.is_file() else args.seen_categories
            seen = {c.strip() for c in text.replace(",", "\n").splitlines() if c.strip()}
        scores = evaluate_youtube_vos(args.root, args.split, args.results, seen, args.seen_split)
        print_youtube_vos(scores)
    else:
        scores = evaluate_segtrack(args.root, args.results)
        print_segtrack(scores)
    if args.json:
        print(f"wrote {write_scores_json(scores, args.json, args.force)}")
    return 0


def predict_main(args, model, cache, proposal_net) -> int:
    """``predict --dataset youtube-vos|segtrack`` (after :func:`plan_dataset` checked the inputs)."""
    written = predict_dataset(args.dataset, args.root, args.out, model, args.split or "valid", cache, proposal_net,
                              args.device, args.force, args.sequences, size=args.size)
    where = Path(args.out) / "Annotations" if args.dataset == "youtube-vos" else Path(args.out)
    print(f"wrote results for {len(written)} videos to {where}")
    return 0


def dataset_root(args) -> Path:
    """The dataset root from ``--root`` (or ``--davis-root`` for DAVIS), checked."""
    root = getattr(args, "root", None) or getattr(args, "davis_root", None)
    if root is None:
        raise DMMInputError(f"--root is required (the {args.dataset} dataset folder)")
    if args.dataset != "davis" and not Path(root).is_dir():  # DAVIS checks name the missing file themselves
        raise DMMInputError(f"{args.dataset} root {root} is not a folder")
    return Path(root)


# ---------------------------------------------------------------------------- the chapter's tables and commands

# The paper's figures (Tables 1-3, DMM-Net rows) and training settings (Sec. 4.1): the reproduction's targets.
PAPER_TARGETS = [
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net+ (R101), no online learning",
     "J_S": 58.3, "J_U": 41.6, "F_S": 60.7, "F_U": 46.3, "G": 51.7, "FPS": "12 (Titan XP, 255x448)"},
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net+ (R101), online learning",
     "J_S": 60.3, "J_U": 50.6, "F_S": 63.5, "F_U": 57.4, "G": 58.0, "FPS": "-"},
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net (R50), online learning",
     "J_S": 59.2, "J_U": 47.6, "F_S": 62.6, "F_U": 53.9, "G": 55.8, "FPS": "-"},
    {"benchmark": "DAVIS 2017 val", "where": "Table 2", "setting": "no online learning",
     "J_M": 68.1, "F_M": 73.3, "G": 70.7},
    {"benchmark": "SegTrack v2 (all 14 videos)", "where": "Table 3", "setting": "DAVIS-trained, no fine-tuning, no OL",
     "mIoU*": 76.8, "mIoU†": 76.7},
]

PAPER_TRAINING = [
    {"what": "proposal net", "paper (Sec. 4.1)": "Mask R-CNN X101-FPN, COCO, then COCO + YouTube-VOS: lr 0.02, "
     "batch 8, 200,000 iterations; ROI score threshold 0; short side <= 800; top-50 kept"},
    {"what": "matching features", "paper (Sec. 4.1)": "COCO Mask R-CNN R50-FPN backbone (DMM-Net+: R101 from RVOS); "
     "RoI pooling of conv2-5, averaged"},
    {"what": "YouTube-VOS training", "paper (Sec. 4.1)": "Adam, lr 1e-4 (pretrained) / 1e-3 (random), batch 24, "
     "10 epochs, random affine augmentation, 255x448, light refinement (4 ConvLSTMs)"},
    {"what": "DAVIS 2017 fine-tuning", "paper (Sec. 4.1)": "Adam, lr 1e-7, batch 1, 8 epochs, short side <= 480, "
     "U-Net refinement initialised from RGMP"},
    {"what": "matching", "paper (Sec. 4.1)": "N_grad 40, N_proj 5, alpha 0.1; lambda 0.3 (DAVIS, YouTube-VOS), "
     "0.9 (SegTrack v2); X~ = X^ * 1[X^ = row max]"},
    {"what": "online learning", "paper (Sec. 4.1)": "100 epochs on the first frame (proposal net and DMM-Net)"},
]

# Sizes the paper states (Sec. 4): the only counts we quote without the data at hand.
PAPER_DATASET_FACTS = [
    {"dataset": "YouTube-VOS 2018", "videos": "3,471 train / 474 val", "objects": "65 seen + 26 unseen categories in val",
     "frames": "annotated at 6 fps"},
    {"dataset": "DAVIS 2017", "videos": "60 train / 30 val", "objects": "2.30 / 1.97 per sequence",
     "frames": "about 70 per video (so about 2,100 in val)"},
    {"dataset": "SegTrack v2", "videos": "14", "objects": "24", "frames": "947 in all"},
]

# Sizes of the generated fixtures and of the tiny runs, per profile (the chapter reads them from here).
CHAPTER_SETTINGS = {
    "smoke": {"davis": {"sequences": {"train": ["train-a"], "val": ["val-a"]}, "frames": 3},
              "youtube_vos": {"videos": 1, "frames": 11, "entering_at": 5},
              "segtrack": {"frames": 3}, "size": (48, 80), "proposal_steps": 1, "train_steps": 1},
    "cpu": {"davis": {"sequences": {"train": ["train-a"], "val": ["val-a", "val-b"]}, "frames": 5},
            "youtube_vos": {"videos": 1, "frames": 21, "entering_at": 10},
            "segtrack": {"frames": 4}, "size": (64, 112), "proposal_steps": 2, "train_steps": 2},
    "gpu": {"davis": {"sequences": {"train": ["train-a", "train-b"], "val": ["val-a", "val-b"]}, "frames": 10},
            "youtube_vos": {"videos": 2, "frames": 41, "entering_at": 10},
            "segtrack": {"frames": 8}, "size": (128, 224), "proposal_steps": 20, "train_steps": 20},
}

REAL_FOLDERS = {"davis": "DAVIS", "youtube-vos": "youtube-vos", "segtrack": "SegTrackv2"}


def chapter_settings(profile: str | None = None) -> dict:
    from dmmlib.profiles import by_profile

    return by_profile(CHAPTER_SETTINGS, profile)


def real_dataset_status(data_root=None) -> dict[str, dict]:
    """Which real datasets sit under ``data/`` (or ``data_root``): ``{name: {"path", "present", "detail"}}``.

    A dataset counts as present when the file its loader starts from exists:
    ``DAVIS/ImageSets/2017/val.txt``, ``youtube-vos/train/meta.json``, ``SegTrackv2/GroundTruth/``.
    """
    from dmmlib.data import data_dir

    base = Path(data_root) if data_root is not None else data_dir()
    checks = {"davis": "ImageSets/2017/val.txt", "youtube-vos": "train/meta.json", "segtrack": "GroundTruth"}
    status = {}
    for name, folder in REAL_FOLDERS.items():
        path = base / folder
        marker = path / checks[name]
        status[name] = {"path": path, "present": marker.exists(),
                        "detail": f"found {marker}" if marker.exists() else f"no {marker}"}
    return status


def pipeline_commands(dataset: str, root, work, tiny: dict | None = None, proposal_net=None,
                      davis_checkpoint=None) -> list[tuple[str, list[str]]]:
    """The commands that reproduce one benchmark, in order: ``[(step, argv after "python -m dmmlib")]``.

    ``root``: the dataset folder; ``work``: where checkpoints, caches and results go.
    ``tiny``: ``{"proposal_steps", "train_steps", "size": (H, W)}`` adds the overrides that
    make the same commands run in seconds on a fixture (the chapter runs them so);
    ``None`` gives the full-size commands (on several GPUs, :func:`shell_line` puts the
    training step under torchrun). ``proposal_net``: the proposal-net checkpoint that
    YouTube-VOS and SegTrack v2 use (``proposals train`` reads the DAVIS layout only; default
    ``<work>/proposal_net.pt``); ``davis_checkpoint``: the DAVIS-trained DMMNet that SegTrack
    v2 is run with, as in the paper.
    """
    root, work = str(root), Path(work)
    config_dir = Path(__file__).resolve().parents[1] / "configs"
    net = str(proposal_net if proposal_net is not None else work / "proposal_net.pt")
    small = tiny is not None
    train_set = []
    if small:
        height, width = tiny["size"]
        train_set = ["--set", "profile=smoke", "--set", f"frame_size=[{height},{width}]", "--set", "max_objects=2",
                     "--set", "clips_per_epoch=1", "--set", "batch_size=1", "--set", f"max_steps={tiny['train_steps']}",
                     "--set", "num_workers=0", "--set", "device=cpu", "--set", "model.backbone=resnet18",
                     "--set", "model.refine_width=8", "--set", "checkpoint_every=1"]
    steps = ["--steps", str(tiny["proposal_steps"])] if small else ["--profile", "gpu"]
    if dataset == "davis":
        cache = str(work / "proposals")
        cmds = [("proposal net", ["proposals", "train", "--data", root, "--out", net, *steps]),
                ("proposals (train)", ["proposals", "compute", "--data", root, "--split", "train", "--checkpoint", net,
                                       "--cache", cache]),
                ("proposals (val)", ["proposals", "compute", "--data", root, "--split", "val", "--checkpoint", net,
                                     "--cache", cache]),
                ("proposal recall", ["proposals", "recall", "--data", root, "--split", "val", "--cache", cache]),
                ("train", ["train", "--config", str(config_dir / "davis2017.yaml"), "--data", root,
                           "--out", str(work / "run"), "--set", f"proposal_cache={cache}", *train_set]),
                ("predict", ["predict", "--davis-root", root, "--split", "val", "--out", str(work / "results"),
                             "--checkpoint", str(work / "run/model.pt"), "--proposals-cache", cache]),
                ("evaluate", ["evaluate", "--davis-root", root, "--split", "val", "--results", str(work / "results")])]
    elif dataset == "youtube-vos":
        size = ["--size", "255", "448"] if not small else []
        # on a fixture: no ImageNet or COCO download; the proposal net of the DAVIS run proposes inside training
        extra = ["--set", "backbone_weights=null", "--set", f"proposal_weights={net}"] if small else []
        cmds = [("train", ["train", "--config", str(config_dir / "youtube-vos.yaml"), "--data", root,
                           "--out", str(work / "run"), *train_set, *extra]),
                ("predict (valid, for the server)", ["predict", "--dataset", "youtube-vos", "--root", root,
                                                     "--split", "valid", "--out", str(work / "valid"),
                                                     "--checkpoint", str(work / "run/model.pt"),
                                                     "--proposal-checkpoint", net, *size]),
                ("predict (held-out split)", ["predict", "--dataset", "youtube-vos", "--root", root,
                                              "--split", "train-val", "--out", str(work / "train-val"),
                                              "--checkpoint", str(work / "run/model.pt"),
                                              "--proposal-checkpoint", net, *size]),
                ("evaluate (held-out split)", ["evaluate", "--dataset", "youtube-vos", "--root", root,
                                               "--split", "train-val", "--results", str(work / "train-val")])]
    elif dataset == "segtrack":
        cmds = [("predict", ["predict", "--dataset", "segtrack", "--root", root, "--out", str(work / "results"),
                             "--checkpoint", str(davis_checkpoint), "--proposal-checkpoint", net,
                             "--lam", "0.9"]),
                ("evaluate", ["evaluate", "--dataset", "segtrack", "--root", root, "--results",
                              str(work / "results")])]
    else:
        raise DMMInputError(f"dataset={dataset!r}; expected one of {', '.join(DATASETS)}")
    return cmds


def shell_line(argv: list[str], gpus: int = 1) -> str:
    """``python -m dmmlib ...`` as one shell line; training on several GPUs goes through torchrun."""
    import shlex

    head = ["torchrun", f"--nproc_per_node={gpus}", "-m", "dmmlib"] if gpus > 1 and argv[0] == "train" \
        else ["python", "-m", "dmmlib"]
    repo = str(Path(__file__).resolve().parents[1]) + "/"
    return " ".join(shlex.quote(a.replace(repo, "")) for a in head + argv)


def run_command(argv: list[str], in_process: bool = False, cwd=None, show_tail: int = 12) -> dict:
    """Run ``python -m dmmlib ARGV``; raise if its exit status is not 0.

    ``in_process``: through :func:`dmmlib.cli.main` in this interpreter (same parser, same
    code; saves the ~5 s start of a new Python with torch), else as a subprocess.
    Prints the command and the last ``show_tail`` lines of its output; returns
    ``{"argv", "seconds", "output"}``.
    """
    import contextlib
    import io
    import subprocess
    import sys
    import time

    argv = [str(a) for a in argv]
    print("$", shell_line(argv))
    start = time.perf_counter()
    if in_process:
        from dmmlib.cli import main as cli_main

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = cli_main(argv)
        output = buffer.getvalue()
    else:
        done = subprocess.run([sys.executable, "-m", "dmmlib", *argv], cwd=cwd, capture_output=True, text=True)
        code, output = done.returncode, done.stdout + done.stderr
    seconds = time.perf_counter() - start
    import re

    bar = re.compile(r"\d+%\|")  # tqdm progress bars
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip() and not bar.search(line)
             and "UserWarning" not in line and "warnings.warn" not in line]
    for line in lines[-show_tail:]:
        print("   ", line)
    if code != 0:
        raise RuntimeError(f"command failed with exit status {code}: {shell_line(argv)}\n{output[-3000:]}")
    return {"argv": argv, "seconds": seconds, "output": output}
