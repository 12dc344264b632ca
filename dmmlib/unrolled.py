"""One training example through the model: the unrolled clip (Sec. 4.1, "Fine-tune"; Table 4's "Unroll").

A clip of ``unroll + 1`` consecutive frames ``[T, 3, H, W]`` with labels ``[T, H, W]``:
the ground-truth masks of its first frame are the templates (their features are
computed on that frame), then ``model.step`` runs over the next ``unroll`` frames with
the proposals of each, carrying the tracking state (ConvLSTM memory, the matched mask
used for the next frame's IoU, the template features). The loss of every unrolled frame
is back-propagated through the refinement head, the matching layer (Alg. 1) and the
matching features, so the cost matrix (Eq. 1) is learned.

Burn-in (``TrainConfig.burn_in``, our addition; the paper does not have it). Unrolled over 2 or
3 frames, the refinement head's ConvLSTM only ever trains on memory 1..unroll frames old, and
on a 20-frame video it runs on memory up to 19 frames old. Measured on the book's cpu models
(160 steps, frozen cost): the head's correction was neutral on frames 1-2 and cost 5-8 IoU
points on the later ones; about 1 point overall when its memory was reset every frame. So a clip may
start with up to ``burn_in`` frames that the model tracks without gradient or loss: how many is
drawn per step (:func:`burn_in_frames`), and the unrolled frames then train on older memory.
The template features keep their gradient through the burn-in (they are computed before it).

:class:`UnrolledClip` is that graph as one module (so DistributedDataParallel wraps it as one forward); training
(:mod:`dmmlib.training`) and online learning (:mod:`dmmlib.online`) both run it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from dmmlib.cost import mask_iou
from dmmlib.errors import DMMInputError
from dmmlib.losses import assignment_loss, best_proposal, mask_loss
from dmmlib.proposals.sources import FrameQuery, ProposalSource, propose_all
from dmmlib.train_config import TrainConfig

BURN_IN_STREAM = 7  # keeps the burn-in draws apart from the clips' proposal draws (seeded by seed and key)


def clip_length(cfg: TrainConfig) -> int:
    """Frames in one training clip of ``cfg``: the template frame, the longest burn-in, the unrolled frames."""
    return 1 + cfg.burn_in + cfg.unroll


def burn_in_frames(cfg: TrainConfig, keys: list[tuple[int, ...]]) -> int:
    """How many frames the step of the clips ``keys`` tracks before its unrolled ones: 0..``cfg.burn_in``.

    Drawn from the step's first key (epoch, index) and the run's seed, so a resumed run, and any
    number of DataLoader workers, draws the same; one number for the whole batch (clips are stacked).
    """
    if cfg.burn_in == 0:
        return 0
    return int(np.random.default_rng([cfg.seed, BURN_IN_STREAM, *keys[0]]).integers(0, cfg.burn_in + 1))


def _clip_parts(item) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Normalise a dataset item to ``(frames [T, 3, H, W] float or uint8, labels [T, H, W] long, meta)``.

    uint8 frames stay uint8 (they are scaled to [0, 1] once on the model's device).
    """
    if isinstance(item, dict):
        frames, labels = item["frames"], item["labels"]
        meta = {k: v for k, v in item.items() if k not in ("frames", "labels")}
    else:
        frames, labels = item[0], item[1]
        meta = item[2] if len(item) > 2 and isinstance(item[2], dict) else {}
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8:
        frames = frames.to(torch.float32)
    labels = torch.as_tensor(np.asarray(labels)).long()
    if frames.dim() != 4 or frames.shape[1] != 3 or labels.shape != (frames.shape[0], *frames.shape[2:]):
        raise DMMInputError(
            f"a training clip must be frames [T, 3, H, W] with labels [T, H, W]; "
            f"got {tuple(frames.shape)} and {tuple(labels.shape)}"
        )
    return frames, labels, meta


def collate_clips(items: list) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Stack clips: ``(frames [B, T, 3, H, W], labels [B, T, H, W], metas)``."""
    parts = [_clip_parts(item) for item in items]
    return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), [p[2] for p in parts]


def object_masks(labels: torch.Tensor, n: int) -> torch.Tensor:
    """One binary mask per object id 1..n: labels ``[..., H, W]`` -> ``[..., n, H, W]`` float (255, void, is no object)."""
    ids = torch.arange(1, n + 1, device=labels.device).view(-1, 1, 1)
    return (labels.unsqueeze(-3) == ids).float()


def frame_query(frames: torch.Tensor, labels: torch.Tensor, meta: dict, t: int,
                rng: np.random.Generator) -> FrameQuery:
    """The :class:`~dmmlib.proposals.FrameQuery` of frame ``t`` of one clip (frames [T, 3, H, W], labels [T, H, W]).

    ``labels`` should be on the host (oracle sources read them as numpy); ``frames`` may be on the device.
    """
    index = int(meta["frame_indices"][t]) if "frame_indices" in meta else t
    names = meta.get("frame_names") or []
    instances, transform = meta.get("instances"), meta.get("transform")
    return FrameQuery(
        sequence=str(meta.get("sequence", "clip")), index=index, name=names[t] if names else f"{index:05d}",
        image=frames[t], labels=labels[t].cpu().numpy().astype(np.uint8),
        instances=None if instances is None else np.asarray(instances[t]), rng=rng,
        transform=None if transform is None else np.asarray(transform, dtype=np.float64),
    )


def clip_proposals(frames: torch.Tensor, labels: torch.Tensor, metas: list[dict], keys: list[tuple[int, ...]],
                   source: ProposalSource, seed: int) -> list[list]:
    """Proposals for frames 1..T-1 of every clip: ``[T-1][B]`` FrameProposals.

    frames [B, T, 3, H, W], labels [B, T, H, W]. The randomness of clip ``b``, frame ``t``
    is drawn from a generator seeded by ``(seed, *keys[b], t)`` -- the clip's epoch and
    index, not the process -- so a clip gets the same proposals whichever rank or DataLoader
    worker computes it and whenever it is resumed. A source that answers batches (a proposal
    network) gets all B * (T-1) frames in one call (:func:`~dmmlib.proposals.sources.propose_all`).
    """
    batch, length = frames.shape[0], frames.shape[1]
    queries = [frame_query(frames[b], labels[b], metas[b], t, np.random.default_rng([seed, *keys[b], t]))
               for t in range(1, length) for b in range(batch)]
    found = propose_all(source, queries)
    return [found[(t - 1) * batch: t * batch] for t in range(1, length)]


class KeyedClips(torch.utils.data.Dataset):
    """A clip dataset addressed by ``(epoch, index)`` keys, for one DataLoader over a whole run.

    ``dataset[index]`` after ``dataset.set_epoch(epoch)`` (when it has one), so a persistent
    worker needs no message when the epoch changes. With a ``source`` that works on the host
    (``source.in_workers``: ground-truth or cached proposals) the item also carries the clip's
    proposals, computed in the worker with the seeds of :func:`clip_proposals`.
    """

    def __init__(self, dataset, source: ProposalSource | None, seed: int):
        self.dataset, self.seed = dataset, seed
        self.source = source if getattr(source, "in_workers", False) else None

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        item = self.dataset[index]
        if self.source is None:
            return key, item, None
        frames, labels, meta = _clip_parts(item)
        proposals = clip_proposals(frames[None], labels[None], [meta], [key], self.source, self.seed)
        return key, item, [per_frame[0] for per_frame in proposals]


def collate_keyed(entries: list) -> tuple[list, tuple, list[list] | None]:
    """``(keys, (frames, labels, metas), proposals [T-1][B] or None)`` from :class:`KeyedClips` items."""
    keys, items, proposals = zip(*entries)
    batch = collate_clips(list(items))
    if proposals[0] is None:
        return list(keys), batch, None
    return list(keys), batch, [list(per_frame) for per_frame in zip(*proposals)]


def clip_loader(dataset, keys, source: ProposalSource, seed: int, num_workers: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """One DataLoader over ``keys`` (an iterable of per-step ``[(epoch, index), ...]`` lists) for a whole run.

    Workers stay alive across epochs (``persistent_workers``); batches land in pinned memory when
    the device is CUDA; a :class:`~dmmlib.data.ClipDataset`'s frames travel as uint8; proposals that
    need only the host are made in the workers (:class:`KeyedClips`). Items: ``(keys, (frames,
    labels, metas), proposals or None)``.
    """
    if hasattr(dataset, "with_uint8_frames"):
        dataset = dataset.with_uint8_frames()
    return torch.utils.data.DataLoader(
        KeyedClips(dataset, source, seed), batch_sampler=keys, collate_fn=collate_keyed, num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=num_workers > 0,
        # the loader's own generator, so that it never draws from (and shifts) the global torch RNG
        generator=torch.Generator().manual_seed(seed),
    )


class UnrolledClip(nn.Module):
    """Runs the model over a batch of clips and returns the loss (wrapped by DDP as one forward).

    ``forward(frames [B, T, 3, H, W], labels [B, T, H, W], proposals [T-1][B], burn_in=0) -> (loss, stats)``
    where ``stats`` holds detached 0-dim tensors on the model's device (read them on the host when
    logging: reading is a synchronisation): the mask and assignment losses, the hard IoU of the
    predictions and the fraction of templates whose largest ``X_hat`` entry is the GT-best
    proposal. Frame 0 gives the templates; frames 1..burn_in are tracked without gradient
    or loss; frames burn_in+1..T-1 are predicted and scored. uint8 frames are scaled
    to [0, 1] here, on the device they arrived on. Losses are computed in float32 (under AMP the
    logits may be bf16 / fp16: a sum over H x W pixels overflows fp16).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.loss_kind = cfg.loss
        self.n = cfg.max_objects
        self.assignment_weight = float(cfg.assignment_loss_weight)
        self.assignment_min_iou = float(cfg.assignment_min_iou)

    def forward(self, frames: torch.Tensor, labels: torch.Tensor, proposals: list[list], burn_in: int = 0):
        if not 0 <= burn_in < frames.shape[1] - 1:
            raise DMMInputError(f"burn_in={burn_in} must leave at least one of the clip's {frames.shape[1] - 1} "
                                f"frames after the template frame to train on")
        if frames.dtype == torch.uint8:
            frames = frames.float().div_(255.0)
        masks = object_masks(labels, self.n)  # [B, T, n, H, W]
        valid = masks[:, 0].flatten(2).any(-1)  # [B, n]: objects with a template in frame 0
        state = self.model.init_state(frames[:, 0], masks[:, 0], valid)
        with torch.no_grad():  # the state's memory and previous masks age; the template features keep their graph
            for t in range(1, burn_in + 1):
                _, state = self.model.step(frames[:, t], proposals[t - 1], state)
        total = frames.new_zeros(())
        sums = {name: frames.new_zeros(()) for name in ("mask_loss", "assignment_loss", "iou", "objects", "hits", "scored")}
        for t in range(burn_in + 1, frames.shape[1]):
            out, state = self.model.step(frames[:, t], proposals[t - 1], state)
            frame_loss, best = self._frame_loss(out, masks[:, t], valid, sums)
            total = total + frame_loss
            with torch.no_grad():  # statistics, accumulated on the device: no host read per frame
                iou = mask_iou((out.logits > 0).unsqueeze(-3), masks[:, t].bool().unsqueeze(-3))[..., 0, 0]  # [B, n]
                sums["iou"] += torch.where(valid, iou, 0.0).sum()
                sums["objects"] += valid.sum()
                scored = valid & (best >= 0)
                sums["hits"] += ((out.x_hat.argmax(-1) == best) & scored).sum()
                sums["scored"] += scored.sum()
        unrolled = frames.shape[1] - 1 - burn_in
        stats = {
            "mask_loss": sums["mask_loss"] / unrolled,
            "assignment_loss": sums["assignment_loss"] / unrolled,
            "iou": sums["iou"] / sums["objects"].clamp_min(1.0),
            "assignment_accuracy": sums["hits"] / sums["scored"].clamp_min(1.0),
        }
        return total / unrolled, stats

    def _frame_loss(self, out, target: torch.Tensor, valid: torch.Tensor, sums: dict):
        """The loss of one unrolled frame (mask loss + weighted assignment loss) and the GT-best proposals [B, n]."""
        frame_loss = mask_loss(out.logits.float(), target, valid, self.loss_kind)
        sums["mask_loss"] += frame_loss.detach()
        # the model's own P~ [B, m, H, W] (after its top-k and padding), so columns line up with X_hat
        best = torch.stack([
            best_proposal(target[b], out.proposal_masks[b].detach(), self.assignment_min_iou)
            for b in range(target.shape[0])
        ])  # [B, n]
        if self.assignment_weight > 0:
            a_loss = assignment_loss(out.x_hat, best, valid)
            sums["assignment_loss"] += a_loss.detach()
            frame_loss = frame_loss + self.assignment_weight * a_loss
        return frame_loss, best
