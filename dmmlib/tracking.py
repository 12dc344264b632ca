"""Track objects through a video from a first-frame mask: :func:`track` and ``python -m dmmlib track``.

Semi-supervised VOS as in the paper: the first frame's label mask gives the
templates R (Sec. 3); every later frame gets proposals and one step of
:class:`dmmlib.model.DMMNet`. Frames are streamed: only the current frame and
the model's :class:`~dmmlib.model.TrackState` are held, so memory does not grow
with the length of the video.

Conventions (documented choices):

* :func:`track` yields one ``uint8 [H, W]`` label mask per frame, the first one
  being the given first mask (with void 255 set to 0, as results files have no void).
* A video needs at least two frames: with one frame there is nothing to track,
  and that is reported as a :class:`DMMInputError` rather than silently echoing the mask.
* Object ids are those of the first mask (any of 1..254, not necessarily
  contiguous); objects that appear only later are not tracked (DAVIS protocol)
  unless their masks are given in ``later_masks`` (YouTube-VOS protocol: an
  object's first annotated frame gives its template). Such an object joins the
  tracked set at that frame: its template features are computed on that frame,
  its ConvLSTM memory starts at zero, and the result of that frame holds its
  given mask; from the next frame on it is matched like every other object.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from dmmlib.errors import DMMInputError
from dmmlib.fileio import refuse_overwrite
from dmmlib.maskio import read_label_png, write_label_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VOID_LABEL = 255


# -- inputs --------------------------------------------------------------------------------------


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The frames of a folder, sorted by name; an error if there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DMMInputError(f"frames directory {folder} holds no images; expected {', '.join(IMAGE_SUFFIXES)} files")
    return files


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DMMInputError(f"frame {path} is not a readable image: {error}") from None


def _read_video(path: Path) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DMMInputError(f"frames {path} is neither a directory of images nor a video OpenCV can open")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(bgr[:, :, ::-1])  # OpenCV decodes BGR
    finally:
        capture.release()


def _as_rgb(frame, index: int) -> np.ndarray:
    """A frame as uint8 [H, W, 3] RGB: from a path, a uint8/float array [H, W, 3] or a float tensor [3, H, W]."""
    import torch

    if isinstance(frame, (str, os.PathLike)):
        return _read_image(Path(frame))
    if isinstance(frame, torch.Tensor):
        if frame.ndim == 3 and frame.shape[0] == 3 and torch.is_floating_point(frame):
            frame = (frame.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        else:
            frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DMMInputError(f"frame {index} has shape {frame.shape}; expected an RGB image [H, W, 3]")
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.floating):
            raise DMMInputError(f"frame {index} has dtype {frame.dtype}; expected uint8 or float in [0, 1]")
        frame = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)
    return frame


def iter_frames(frames) -> tuple[Iterator[np.ndarray], int | None, list[str] | None]:
    """(frames as uint8 RGB [H, W, 3], their number if known, their names if from a folder).

    ``frames``: a folder of images, a video file, or an iterable of images.
    """
    if isinstance(frames, (str, os.PathLike)):
        path = Path(frames)
        if path.is_dir():
            files = image_files(path)
            return (_read_image(p) for p in files), len(files), [p.stem for p in files]
        if not path.exists():
            raise DMMInputError(f"frames {path} does not exist; expected a folder of images or a video file")
        import cv2

        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        return _read_video(path), (count or None), None
    if hasattr(frames, "shape") and len(frames.shape) == 3:
        raise DMMInputError("frames is a single image; expected a video (a folder, a video file or a sequence of images)")
    try:
        iterator = iter(frames)
    except TypeError:
        raise DMMInputError(f"frames must be a folder, a video file or an iterable of images; got {type(frames).__name__}") from None
    total = len(frames) if hasattr(frames, "__len__") else None
    return (_as_rgb(f, k) for k, f in enumerate(iterator)), total, None


def read_first_mask(first_frame_masks) -> np.ndarray:
    """The first frame's label mask as uint8 [H, W] (a PNG path or an integer array)."""
    if isinstance(first_frame_masks, (str, os.PathLike)):
        return read_label_png(first_frame_masks)
    if hasattr(first_frame_masks, "cpu"):  # a torch tensor
        first_frame_masks = first_frame_masks.cpu().numpy()
    mask = np.asarray(first_frame_masks)
    if mask.ndim != 2:
        raise DMMInputError(f"first_frame_masks has shape {mask.shape}; expected a label mask [H, W] of object ids")
    if mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
        if mask.dtype == bool:
            mask = mask.astype(np.uint8)
        else:
            raise DMMInputError(f"first_frame_masks has dtype {mask.dtype}; expected integer object ids")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DMMInputError("first_frame_masks must hold ids in 0..255 (0 background, 255 void)")
    return mask.astype(np.uint8)


def object_ids(mask: np.ndarray) -> list[int]:
    """The tracked ids of a first mask: every value but 0 (background) and 255 (void)."""
    return [int(v) for v in np.unique(mask) if v not in (0, VOID_LABEL)]


# -- proposals ---------------------------------------------------------------------------------


def proposal_source(proposals=None, proposal_net=None, sequence: str | None = None) -> Callable:
    """A function (frame_index, frame uint8 [H, W, 3]) -> FrameProposals.

    ``proposals``: a :class:`dmmlib.proposals.ProposalCache` (read ``sequence``; a
    frame missing from the cache is computed by ``proposal_net`` if given, else an
    error), a list indexed by frame (entry 0, the first frame, is not used) or a
    callable with that signature. ``None``: ``proposal_net.propose(frame)``.
    """
    from dmmlib.proposals import ProposalCache

    if isinstance(proposals, ProposalCache):
        if sequence is None:
            raise DMMInputError("proposals is a ProposalCache; pass sequence=<name of the video in the cache>")
        cache = proposals

        def from_cache(index: int, frame: np.ndarray):
            found = cache.get(sequence, index)
            if found is None:
                if proposal_net is None:
                    raise DMMInputError(f"proposal cache {cache.root} has no proposals for {sequence} frame {index}")
                return proposal_net.propose(frame)
            return found

        return from_cache
    if isinstance(proposals, (list, tuple)):
        listed = proposals

        def from_list(index: int, frame: np.ndarray):
            if index >= len(listed):
                raise DMMInputError(f"proposals list has {len(listed)} entries; frame {index} has none")
            return listed[index]

        return from_list
    if callable(proposals):
        return proposals
    if proposals is not None:
        raise DMMInputError(f"proposals must be a ProposalCache, a list or a callable; got {type(proposals).__name__}")
    if proposal_net is None:
        raise DMMInputError("no proposals: pass proposals=... or proposal_net=...")
    return lambda index, frame: proposal_net.propose(frame)


# -- tracking ----------------------------------------------------------------------------------


def _to_tensor(frame: np.ndarray, device):
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    import torch

    return torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def track(
    frames,
    first_frame_masks,
    model=None,
    proposals=None,
    proposal_net=None,
    device: str = "auto",
    progress: bool = True,
    sequence: str | None = None,
    size: tuple[int, int] | None = None,
    later_masks: Mapping[int, object] | None = None,
) -> Iterator[np.ndarray]:
    """Track the objects of ``first_frame_masks`` through ``frames``; yield one uint8 [H, W] label mask per frame.

    frames: a folder of images, a video file, or an iterable (a generator is fine) of
    uint8 RGB [H, W, 3] arrays, float [3, H, W] tensors or image paths.
    first_frame_masks: label mask [H, W] (0 background, 1..254 objects, 255 void) or a PNG path.
    model: a :class:`dmmlib.model.DMMNet` (default: an untrained one, with a warning;
    it is moved to ``device``). proposals / proposal_net: see :func:`proposal_source`;
    with neither, an untrained :class:`dmmlib.proposals.ProposalNet` is built (warning).
    sequence: the video's name in a ProposalCache (default: the folder's or file's name).
    size: (H', W') at which the model runs (the paper uses 255 x 448 for YouTube-VOS);
    default: the frames' own size. Frames are resized bilinearly, templates by area
    (threshold 1/2, keeping at least each object's densest pixel), proposals by their
    boxes; the logits are resized back, so outputs always have the frames' size.
    later_masks: ``{frame index >= 1: label mask [H, W] or PNG path}`` giving objects that
    enter after the first frame; the ids of a mask not tracked yet join at that frame
    (ids already tracked are ignored there). The first mask may then be empty.

    The inputs are checked now (first mask empty or of another size than the frames,
    fewer than two frames, a folder without images: :class:`DMMInputError`); the
    returned iterator then runs one model step per frame under ``torch.no_grad()``.
    """
    from dmmlib.info import pick_device
    from dmmlib.model import DMMNet

    mask = read_first_mask(first_frame_masks)
    ids = object_ids(mask)
    later = _read_later_masks(later_masks, mask.shape)
    if not ids and not any(object_ids(m) for m in later.values()):
        raise DMMInputError("first_frame_masks holds no object (only background 0 / void 255); expected at least one object id")
    frame_iter, total, _ = iter_frames(frames)
    first = next(frame_iter, None)
    if first is None:
        raise DMMInputError("frames is empty; expected a video of at least two frames")
    if first.shape[:2] != mask.shape:
        raise DMMInputError(
            f"first_frame_masks has size {mask.shape[0]}x{mask.shape[1]} but the first frame is "
            f"{first.shape[0]}x{first.shape[1]}; expected the mask of the first frame, at its size"
        )
    second = next(frame_iter, None)
    if second is None:
        raise DMMInputError("frames holds a single frame; tracking needs at least two (the first one's mask is given)")
    if size is not None:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 16:
            raise DMMInputError(f"size={size!r}; expected (height, width), each at least 16 pixels")
    device = pick_device(device)
    if model is None:
        warnings.warn("track: no model given; using an untrained DMMNet (results are not meaningful)", stacklevel=2)
        model = DMMNet()
    if proposals is None and proposal_net is None:
        from dmmlib.proposals import ProposalNet

        warnings.warn("track: no proposals given; using an untrained ProposalNet (results are not meaningful)", stacklevel=2)
        proposal_net = ProposalNet()
    if proposal_net is not None:
        proposal_net.to(device).eval()
    if sequence is None and isinstance(frames, (str, os.PathLike)):
        sequence = Path(frames).stem  # a cache is keyed by the video's name
    source = proposal_source(proposals, proposal_net, sequence)
    model = model.to(device).eval()
    return _run(model, source, mask, ids, first, second, frame_iter, device, progress, total, size, later)


def _read_later_masks(later_masks, shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """``{frame index: uint8 [H, W]}`` from :func:`track`'s ``later_masks``, checked."""
    if later_masks is None:
        return {}
    if not isinstance(later_masks, Mapping):
        raise DMMInputError(f"later_masks must map frame indices to label masks; got {type(later_masks).__name__}")
    checked = {}
    for index, value in later_masks.items():
        if not isinstance(index, (int, np.integer)) or index < 1:
            raise DMMInputError(f"later_masks key {index!r}: expected a frame index >= 1 (frame 0 is first_frame_masks)")
        mask = read_first_mask(value)
        if mask.shape != tuple(shape):
            raise DMMInputError(
                f"later_masks[{index}] has size {mask.shape[0]}x{mask.shape[1]}; expected {shape[0]}x{shape[1]} like the first mask"
            )
        checked[int(index)] = mask
    return checked


def add_objects(model, state, frame, masks):
    """``state`` with the templates ``masks`` [B, k, H, W] of ``frame`` [B, 3, H, W] appended (objects entering late).

    The new objects' features f(r_i) come from ``frame`` (their first annotated frame),
    their IoU template r_hat_i is their given mask and their ConvLSTM memory is zero;
    ``state`` may be ``None`` (no object so far). Returns the new TrackState.
    """
    import torch

    from dmmlib.model import TrackState

    added = model.init_state(frame, masks)
    if state is None:
        return added
    lstm = None
    if state.lstm is not None:
        b, n, k = masks.shape[0], state.template_masks.shape[1], masks.shape[1]
        lstm = []
        for hidden, cell in state.lstm:  # [B * n, C, h, w], object-major within each video
            def grow(t):
                t = t.view(b, n, *t.shape[1:])
                return torch.cat([t, t.new_zeros(b, k, *t.shape[2:])], dim=1).flatten(0, 1)
            lstm.append((grow(hidden), grow(cell)))
    return TrackState(
        torch.cat([state.template_features, added.template_features], dim=1),
        torch.cat([state.template_masks, added.template_masks], dim=1),
        torch.cat([state.template_valid, added.template_valid], dim=1),
        torch.cat([state.previous_masks, added.previous_masks], dim=1),
        lstm,
        state.frame_index,
    )


def _resized_templates(templates, size):
    """Binary templates [1, n, H, W] at ``size``: area-resized, > 1/2, never emptied."""
    import torch.nn.functional as F

    soft = F.interpolate(templates, size=size, mode="area")
    peak = soft.amax(dim=(-1, -2), keepdim=True)
    return (soft >= peak.clamp(max=0.5)).float()


def _run(model, source, mask, ids, first, second, rest, device, progress, total, size, later=None) -> Iterator[np.ndarray]:
    from itertools import chain

    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from dmmlib.model import labels_from_logits

    later = later or {}
    height, width = mask.shape
    ids = list(ids)
    lookup = np.array([0] + ids, dtype=np.uint8)  # row index (1-based) -> object id
    given = np.where(mask == VOID_LABEL, 0, mask).astype(np.uint8)
    resize = size is not None and tuple(size) != (height, width)

    def model_input(frame):
        tensor = _to_tensor(frame, device)
        return F.interpolate(tensor, size=size, mode="bilinear", antialias=True) if resize else tensor

    def templates_of(label_mask, which):
        templates = torch.from_numpy(np.stack([label_mask == i for i in which])).to(device).float()[None]
        return _resized_templates(templates, size) if resize else templates

    bar = tqdm(total=total, disable=not progress, unit="frame", desc="track")
    with torch.no_grad():
        state = model.init_state(model_input(first), templates_of(mask, ids)) if ids else None
        bar.update(1)
        yield given
        for index, frame in enumerate(chain([second], rest), start=1):
            if frame.shape[:2] != (height, width):
                raise DMMInputError(f"frame {index} is {frame.shape[0]}x{frame.shape[1]}; expected {height}x{width} like frame 0")
            if state is not None:
                frame_proposals = source(index, frame)
                output, state = model.step(model_input(frame), [frame_proposals], state)
                logits = output.logits
                if resize:
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                labels = lookup[labels_from_logits(logits, output.present)[0].cpu().numpy()]
            else:
                labels = np.zeros((height, width), np.uint8)
            new_ids = [i for i in object_ids(later[index]) if i not in ids] if index in later else []
            if new_ids:
                state = add_objects(model, state, model_input(frame), templates_of(later[index], new_ids))
                ids += new_ids
                lookup = np.array([0] + ids, dtype=np.uint8)
                for i in new_ids:  # an object's first annotated frame: its given mask is the result
                    labels[later[index] == i] = i
            bar.update(1)
            yield labels
    bar.close()


# -- command line ------------------------------------------------------------------------------


def load_model(checkpoint: str | None):
    """The DMMNet of ``--checkpoint``, or an untrained one (with a warning)."""
    from dmmlib.model import DMMNet, load_checkpoint

    if checkpoint:
        model = load_checkpoint(checkpoint)
    else:
        warnings.warn("no --checkpoint: using an untrained DMMNet (results are not meaningful)", stacklevel=2)
        model = DMMNet()
    return model


def make_proposal_net(proposal_checkpoint: str | None, needed: bool):
    """The ProposalNet for the command line (None when a cache covers everything and none was asked for)."""
    if not proposal_checkpoint and not needed:
        return None
    from dmmlib.proposals import ProposalNet

    if not proposal_checkpoint:
        warnings.warn("no --proposal-checkpoint: using an untrained ProposalNet (results are not meaningful)", stacklevel=2)
    return ProposalNet(weights=proposal_checkpoint or None)


def write_track(labels: Iterable[np.ndarray], out_dir: Path, names: list[str] | None = None) -> int:
    """Write each label mask as ``out_dir/<name>.png`` (default names 00000, 00001, ...); returns the count."""
    count = 0
    for index, label in enumerate(labels):
        name = names[index] if names is not None and index < len(names) else f"{index:05d}"
        write_label_png(out_dir / f"{name}.png", label)
        count += 1
    return count


def refuse_existing_pngs(out_dir: Path, force: bool) -> None:
    """Refuse to write into a folder that already holds PNGs unless ``force``."""
    if out_dir.is_dir() and any(out_dir.glob("*.png")):
        refuse_overwrite(out_dir, force, what="output folder (with PNGs)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", required=True, help="folder of frames (sorted by name) or a video file")
    parser.add_argument("--mask", required=True, help="label PNG of the first frame (DAVIS palette or greyscale ids)")
    parser.add_argument("--out", required=True, help="output folder for the label PNGs (00000.png, ...)")
    parser.add_argument("--checkpoint", help="DMMNet checkpoint (default: an untrained model)")
    parser.add_argument("--proposal-checkpoint", help="ProposalNet weights (default: an untrained net)")
    parser.add_argument("--proposals-cache", help="folder of cached proposals (ProposalCache); --sequence names the video")
    parser.add_argument("--sequence", help="name of the video in --proposals-cache (default: the frames folder's name)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run the model at this size (e.g. 255 448)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, ...")
    parser.add_argument("--force", action="store_true", help="overwrite PNGs already in --out")


def main(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    refuse_existing_pngs(out_dir, args.force)  # before the slow imports: errors come fast
    from dmmlib.proposals import ProposalCache

    model = load_model(args.checkpoint)
    cache = ProposalCache(args.proposals_cache) if args.proposals_cache else None
    if cache is not None and not cache.root.is_dir():
        raise DMMInputError(f"--proposals-cache {cache.root} is not a folder")
    proposal_net = make_proposal_net(args.proposal_checkpoint, needed=cache is None)
    sequence = args.sequence or Path(args.frames).stem
    frames = Path(args.frames)
    names = [p.stem for p in image_files(frames)] if frames.is_dir() else None
    labels = track(frames, args.mask, model=model, proposals=cache, proposal_net=proposal_net,
                   device=args.device, progress=True, sequence=sequence, size=args.size)
    count = write_track(labels, out_dir, names)
    print(f"wrote {count} label masks to {out_dir}")
    return 0
