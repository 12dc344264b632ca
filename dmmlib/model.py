"""DMM-Net: features, the Eq. 1 cost, the matching layer, Eq. 8 and refinement (Sec. 3, Fig. 2).

One frame step for B videos at once (templates padded to n per video, proposals to m):

    frames [B, 3, H, W] --f_theta--> conv2..conv5 maps                      (dmmlib.features)
    proposals --paste--> P~ [B, m, H, W];  --RoIAlign--> f(p_j) [B, m, d]
    C = (lam - 1) cos(f(p_j), f(r_i)) - lam IoU(p_j, r_hat_i)   [B, n, m]   (Eq. 1, dmmlib.cost)
    X^ = dmm_match(C) (Alg. 1);  X~ = X^ * 1[X^ = row max]       [B, n, m]   (Sec. 4.1)
    P^ = X~ (x) P~ = einsum("bnm,bmhw->bnhw")                    [B, n, H, W] (Eq. 8)
    M  = P^ / sum_j X~_ij  (the matched proposal at full strength) [B, n, H, W]
    logits = logit(M) + ConvLSTM decoder(maps, P^, r_i)          [B, n, H, W] (dmmlib.refinement)

and M becomes r_hat, the IoU template of the next frame (Sec. 3, after Eq. 8). M is
P^ divided by the weight it kept: under the paper's row-max X~ that is the matched
proposal itself (a weighted average of the kept proposals when X~ keeps several, as
with ``train_keep_threshold``). Alg. 1 at the paper's settings leaves X^ row maxima
well below 1 (an average of iterates that start at 0), and a faded mask would shrink
every IoU of the next frame; set ``ModelConfig.normalize_previous=False`` for P^ as
printed.

Refinement (``ModelConfig.refine_mode``). The paper's head outputs the mask logits
itself (``"plain"``). Randomly initialised it outputs noise, and early in training it
learns "background everywhere" before it learns the object (chapter 8 measures why).
Our default, ``"pass-through"``, is a deviation from the paper: the head predicts a
correction added to logit(M), with its last layer initialised to zero, so an untrained
model outputs exactly the matching result and training starts from it.

Gradients. Everything on the path features -> C -> X^ -> X~ -> P^ -> logits is
differentiable (no ``.detach()``; the only in-place writes fill a freshly made
padding tensor, which autograd handles). Through time, a
:class:`TrackState` keeps whatever graph its tensors carry: a training loop that
unrolls T steps back-propagates through the previous matched masks of Eq. 1 and
the ConvLSTM states within the clip, and calls :meth:`TrackState.detach` between
clips (truncated back-propagation: memory stays bounded by the clip length).
Inference runs under ``torch.no_grad()``, where nothing is kept.

Objects that vanish. Padding the proposals with "no proposal" columns (empty
masks, cost ``no_proposal_cost``) lets a template stay unmatched; they are added
whenever a video has fewer proposals than objects (so the LP of Eq. 3 stays
feasible, as in the authors' release) and, if ``ModelConfig.no_proposal_cost``
is set, always. Rule: an object whose matched mask P^_i has less mass than
``min_match_fraction`` of the frame is *absent* in that frame: its logits are
set to :data:`SUPPRESSED_LOGIT`, and its IoU template r_hat_i and ConvLSTM
state keep their values from the last frame it was present, so it can be
re-acquired when a proposal matches it again.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from dmmlib.cost import LAMBDA_DAVIS, PADDING_COST, matching_cost
from dmmlib.device import any_on_host, full_precision
from dmmlib.errors import DMMInputError
from dmmlib.features import LEVELS, FeatureExtractor, default_backbone, masks_to_boxes
from dmmlib.matchers import greedy_match, hungarian_match
from dmmlib.matching import PAPER_SETTINGS, confident_assignment, dmm_match
from dmmlib.profiles import by_profile
from dmmlib.refinement import LSTMState, RefinementHead

MATCHERS = ("dmm", "hungarian", "greedy")
REFINE_MODES = ("pass-through", "plain")
SUPPRESSED_LOGIT = -20.0  # sigmoid(-20) = 2e-9: "certainly not this object"
# The pass-through head adds its correction to logit(M) with M clamped to [eps, 1 - eps]: at
# 1e-2 the logit of a certain pixel is 4.6, where sigmoid' is 1e-2 and a correction can still
# move it (at 1e-4 it would be 9.2 and the loss gradient 1e-4); thresholding at 0.5 is unchanged.
PASS_THROUGH_EPS = 1e-2
REFINE_WIDTH = {"smoke": 16, "cpu": 32, "gpu": 64}


@dataclass
class ModelConfig:
    """Every setting of :class:`DMMNet`; saved in checkpoints. Defaults follow Sec. 4.1."""

    backbone: str = "resnet18"  # "resnet50" is the paper's; see dmmlib.features
    pooling: str = "box"  # "box": the paper's spatial average; "mask": mask-weighted
    pool_size: int = 7  # RoIAlign output side
    pool_levels: tuple[str, ...] = LEVELS  # backbone levels pooled into f(p_j), f(r_i): conv2..conv5 (Sec. 4.1)
    lam: float = LAMBDA_DAVIS  # lambda of Eq. 1
    matcher: str = "dmm"  # "dmm" (Alg. 1), "hungarian" or "greedy" (Table 4 ablations)
    n_grad: int = PAPER_SETTINGS["n_grad"]  # Alg. 1 settings, Sec. 4.1
    n_proj: int = PAPER_SETTINGS["n_proj"]
    match_lr: float = PAPER_SETTINGS["lr"]
    match_variant: str = "paper"  # or "release" (see dmmlib.matching)
    confident: bool = True  # Eq. 8 with X~ (Sec. 4.1) rather than X^
    # The authors' release keeps X^ > 0.01 (not just the row max) while training; None: row max always.
    train_keep_threshold: float | None = None
    no_proposal_cost: float | None = None  # None: "no proposal" columns only when m < n
    min_match_fraction: float = 1e-4  # matched mass below this fraction of H*W: object absent
    paste_threshold: float | None = None  # None: soft pasted proposals in Eq. 1 and Eq. 8
    max_proposals: int = 50  # top-50 (Sec. 3)
    normalize_previous: bool = True  # r_hat = P^ / max_j X~_ij (the matched proposal) rather than P^
    refine: bool = True  # False: no refinement head; the output is the matched proposal (P^ / sum_j X~_ij)
    refine_width: int = 32
    refine_mode: str = "pass-through"  # or "plain" (the paper's head); see the module docstring
    refine_levels: tuple[str, ...] = LEVELS  # backbone levels the head reads (conv5 -> conv2, Sec. 3)
    # Speed only, not the model: run Alg. 1's outer iterations through torch.compile (dmm_match(compiled=True)).
    compile_matching: bool = False

    def __post_init__(self) -> None:
        if self.matcher not in MATCHERS:
            raise DMMInputError(f"ModelConfig.matcher={self.matcher!r}; expected one of {MATCHERS}")
        if not 0.0 <= self.lam <= 1.0:
            raise DMMInputError(f"ModelConfig.lam={self.lam}; expected a number in [0, 1]")
        if self.max_proposals < 1 or self.refine_width < 1 or self.pool_size < 1:
            raise DMMInputError("ModelConfig.max_proposals, refine_width and pool_size must be >= 1")
        if self.refine_mode not in REFINE_MODES:
            raise DMMInputError(f"ModelConfig.refine_mode={self.refine_mode!r}; expected one of {REFINE_MODES}")
        self.pool_levels, self.refine_levels = tuple(self.pool_levels), tuple(self.refine_levels)
        for name in ("pool_levels", "refine_levels"):
            levels = getattr(self, name)
            if not levels or not set(levels) <= set(LEVELS):
                raise DMMInputError(f"ModelConfig.{name}={levels!r}; expected a non-empty subset of {LEVELS}")


def default_config(profile: str | None = None, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` for ``profile`` (backbone and refinement width), with ``overrides``."""
    base = ModelConfig(backbone=default_backbone(profile), refine_width=by_profile(REFINE_WIDTH, profile))
    return replace(base, **overrides)


@dataclass
class TrackState:
    """What a step needs from the past.

    template_features [B, n, d] = f(r_i); template_masks [B, n, H, W] = r_i (first frame);
    template_valid [B, n] bool; previous_masks [B, n, H, W] = r_hat_i, the last matched
    masks (Eq. 1's IoU template); lstm: the refinement's (hidden, cell) per level or None;
    frame_index: steps taken.
    """

    template_features: torch.Tensor
    template_masks: torch.Tensor
    template_valid: torch.Tensor
    previous_masks: torch.Tensor
    lstm: LSTMState | None = None
    frame_index: int = 0

    def detach(self) -> "TrackState":
        """The same state cut from the autograd graph (between training clips)."""
        lstm = None if self.lstm is None else [(h.detach(), c.detach()) for h, c in self.lstm]
        return TrackState(
            self.template_features.detach(), self.template_masks.detach(), self.template_valid,
            self.previous_masks.detach(), lstm, self.frame_index,
        )


@dataclass
class StepOutput:
    """One step's tensors (m = proposals after padding; all batch first).

    logits [B, n, H, W]: refined mask logits (absent objects suppressed);
    cost, cosine, iou [B, n, m]: Eq. 1 and its parts; x_hat, x_tilde [B, n, m];
    matched_masks [B, n, H, W]: P^ of Eq. 8; matched_proposals [B, n, H, W]: M = P^ / sum_j X~_ij,
    the matched proposal at full strength (what the refinement starts from); present [B, n] bool;
    proposal_masks [B, m, H, W]: P~; proposal_valid [B, m]: real proposals;
    no_proposal [B, m]: the "no proposal" columns.
    """

    logits: torch.Tensor
    cost: torch.Tensor
    cosine: torch.Tensor
    iou: torch.Tensor
    x_hat: torch.Tensor
    x_tilde: torch.Tensor
    matched_masks: torch.Tensor
    matched_proposals: torch.Tensor
    present: torch.Tensor
    proposal_masks: torch.Tensor
    proposal_valid: torch.Tensor
    no_proposal: torch.Tensor
    timings: dict = field(default_factory=dict)

    def labels(self) -> torch.Tensor:
        """[B, H, W] int64: 0 background, k for object k (1-based index into n); see :func:`labels_from_logits`."""
        return labels_from_logits(self.logits, self.present)


def labels_from_logits(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Combine per-object logits [B, n, H, W] into one label map [B, H, W] (int64).

    Each pixel goes to the object with the largest logit if that logit is > 0
    (probability > 1/2), else to the background (0). Objects are numbered 1..n in
    row order; ``valid`` [B, n] excludes padded or absent objects.
    """
    if valid is not None:
        logits = torch.where(valid[:, :, None, None], logits, torch.full_like(logits, float("-inf")))
    if logits.shape[1] == 0:
        return torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
    best, index = logits.max(dim=1)
    return torch.where(best > 0, index + 1, torch.zeros_like(index))


class _Stopwatch:
    """Wall time per stage into a dict (CUDA synchronised, so GPU work is counted where it happens)."""

    def __init__(self, timings: dict | None, device: torch.device):
        self.timings, self.cuda = timings, device.type == "cuda"

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.timings is None:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


class DMMNet(nn.Module):
    """The DMM-Net model (Fig. 2): :meth:`init_state` on the first frame, then :meth:`step` per frame.

    ``backbone_weights``: None (random), "imagenet" or a local state_dict path (see
    :class:`dmmlib.features.FeatureExtractor`); used only at construction.
    """

    def __init__(self, config: ModelConfig | None = None, backbone_weights: str | os.PathLike | None = None):
        super().__init__()
        self.config = default_config() if config is None else config
        cfg = self.config
        levels = cfg.refine_levels if cfg.refine else ()
        self.features = FeatureExtractor(cfg.backbone, backbone_weights, cfg.pool_size, cfg.pooling, cfg.pool_levels,
                                         levels=levels)
        self.refinement = None
        if cfg.refine:
            channels = tuple(c for level, c in zip(self.features.levels, self.features.channels) if level in levels)
            self.refinement = RefinementHead(channels, cfg.refine_width, levels,
                                             zero_output=cfg.refine_mode == "pass-through")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- first frame -------------------------------------------------------------------------

    def init_state(
        self, frames: torch.Tensor, template_masks: torch.Tensor, template_valid: torch.Tensor | None = None
    ) -> TrackState:
        """Templates from the first frame.

        frames [B, 3, H, W] float in [0, 1]; template_masks [B, n, H, W] float {0, 1} (r_i);
        template_valid [B, n] bool (default: all). A valid template must not be empty.
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise DMMInputError(f"frames must have shape [B, 3, H, W]; got {tuple(frames.shape)}")
        b, _, height, width = frames.shape
        if template_masks.ndim != 4 or template_masks.shape[0] != b or template_masks.shape[-2:] != (height, width):
            raise DMMInputError(
                f"template_masks must have shape [B={b}, n, H={height}, W={width}] like the frames; "
                f"got {tuple(template_masks.shape)}"
            )
        n = template_masks.shape[1]
        if template_valid is None:
            template_valid = torch.ones(b, n, dtype=torch.bool, device=frames.device)
        if template_valid.shape != (b, n):
            raise DMMInputError(f"template_valid must have shape [B={b}, n={n}]; got {tuple(template_valid.shape)}")
        template_masks = template_masks.float()
        empty = template_valid & (template_masks.sum(dim=(-1, -2)) == 0)
        if any_on_host(empty):  # a host read, once per video (or training batch)
            vb, vi = (int(v) for v in empty.nonzero()[0])
            raise DMMInputError(f"template_masks: object {vi} of video {vb} is empty but marked valid")
        feature_maps = self.features(frames)
        boxes = masks_to_boxes(template_masks)  # [B, n, 4]
        batch_index = torch.arange(b, device=frames.device).repeat_interleave(n).to(boxes.dtype)
        rois = torch.cat([batch_index[:, None], boxes.reshape(b * n, 4)], dim=1)
        vectors = self.features.pool(feature_maps, rois, template_masks.reshape(b * n, height, width), [n] * b)
        vectors = vectors.view(b, n, -1) * template_valid[:, :, None].to(vectors.dtype)
        return TrackState(vectors, template_masks, template_valid, template_masks, None, 0)

    # -- one frame ---------------------------------------------------------------------------

    def _gather_proposals(self, proposals, template_valid: torch.Tensor, height: int, width: int, device):
        """Paste, pad and RoI-box B frames' proposals (``template_valid`` [B, n]: the videos' templates).

        Returns P~ [B, M, H, W], rois [K, 5] (real proposals), counts (m_b), real [B, M],
        no_proposal [B, M] and valid [B, M] (real or no-proposal) masks. M comes from sizes the
        host knows -- the proposal counts and the number n of template rows -- so nothing is read
        back from the device: a video needs max(m_b, n_valid) columns (m_b + n_valid with
        ``no_proposal_cost``), and the columns it does not use are padding, masked out of matching.
        """
        cfg = self.config
        pasted, rois, counts = [], [], []
        for b, frame_proposals in enumerate(proposals):
            if len(frame_proposals) > cfg.max_proposals:
                frame_proposals = frame_proposals.top(cfg.max_proposals)
            frame_proposals = frame_proposals.to(device)
            pasted.append(frame_proposals.paste(height, width, cfg.paste_threshold))  # [m_b, H, W]
            ih, iw = frame_proposals.image_size
            scale = frame_proposals.boxes.new_tensor([width / iw, height / ih, width / iw, height / ih])
            boxes = frame_proposals.boxes * scale
            rois.append(torch.cat([boxes.new_full((len(boxes), 1), float(b)), boxes], dim=1))
            counts.append(len(frame_proposals))
        m_real = torch.tensor(counts, device=device)
        n_valid, n_rows = template_valid.sum(dim=1), template_valid.shape[1]
        if cfg.no_proposal_cost is not None:
            n_dummy, total = n_valid, max(counts) + n_rows
        else:  # only what keeps Eq. 3 feasible
            n_dummy, total = (n_valid - m_real).clamp_min(0), max(max(counts), n_rows)
        total = max(1, total)
        column = torch.arange(total, device=device)[None, :]
        real = column < m_real[:, None]
        no_proposal = ~real & (column < (m_real + n_dummy)[:, None])
        if all(len(p) == total for p in pasted):
            stacked = torch.stack(pasted)
        else:  # a fresh tensor filled slice by slice: one copy of each frame's masks, not two
            stacked = pasted[0].new_zeros(len(pasted), total, height, width)
            for b, p in enumerate(pasted):
                stacked[b, : len(p)] = p
        return stacked, torch.cat(rois), counts, real, no_proposal, real | no_proposal

    def _match(self, cost: torch.Tensor, template_valid: torch.Tensor, valid: torch.Tensor):
        """X^ and X~ [B, n, m] from the cost with the configured matcher."""
        cfg = self.config
        if cfg.matcher == "dmm":
            x_hat = dmm_match(
                cost, n_grad=cfg.n_grad, n_proj=cfg.n_proj, lr=cfg.match_lr,
                template_mask=template_valid, proposal_mask=valid, variant=cfg.match_variant,
                compiled=cfg.compile_matching,
            )
            if not cfg.confident:
                return x_hat, x_hat
            if self.training and cfg.train_keep_threshold is not None:
                return x_hat, x_hat * (x_hat > cfg.train_keep_threshold).to(x_hat.dtype)
            return x_hat, confident_assignment(x_hat)
        match = hungarian_match if cfg.matcher == "hungarian" else greedy_match
        x = match(cost, template_mask=template_valid, proposal_mask=valid)
        return x, x  # already 0/1: X~ = X^

    def step(self, frames: torch.Tensor, proposals: list, state: TrackState, timings: dict | None = None):
        """One frame: frames [B, 3, H, W] in [0, 1], ``proposals`` a list of B
        :class:`dmmlib.proposals.FrameProposals` -> (:class:`StepOutput`, new :class:`TrackState`).

        ``timings``: a dict to which the seconds spent in "features", "cost",
        "matching" and "refinement" are added.
        """
        cfg = self.config
        b, n, height, width = state.template_masks.shape
        if frames.ndim != 4 or tuple(frames.shape) != (b, 3, height, width):
            raise DMMInputError(f"frames must have shape [B={b}, 3, H={height}, W={width}] like the first frame; got {tuple(frames.shape)}")
        if len(proposals) != b:
            raise DMMInputError(f"proposals must be a list of B={b} FrameProposals; got {len(proposals)}")
        clock = _Stopwatch(timings, frames.device)

        with clock("features"):
            feature_maps = self.features(frames)
        # Eq. 1 and Alg. 1 in float32 even under autocast (AMP): 200 projection rounds in bf16 would
        # lose the assignment; the backbone and the refinement head, where the FLOPs are, keep it.
        with clock("cost"), full_precision(frames.device):
            proposal_masks, rois, counts, real, no_proposal, valid = self._gather_proposals(
                proposals, state.template_valid, height, width, frames.device
            )
            masks_of_rois = None
            if cfg.pooling == "mask":
                masks_of_rois = torch.cat([proposal_masks[i, :c] for i, c in enumerate(counts)])
            pooled = self.features.pool(feature_maps, rois, masks_of_rois, counts)
            per_video = pooled.split(counts)
            total = proposal_masks.shape[1]
            proposal_features = torch.stack([torch.cat([f, f.new_zeros(total - len(f), f.shape[1])]) for f in per_video])
            terms = matching_cost(state.template_features, proposal_features, state.previous_masks, proposal_masks, cfg.lam, real)
            no_cost = PADDING_COST if cfg.no_proposal_cost is None else float(cfg.no_proposal_cost)
            cost = torch.where(no_proposal[:, None, :], torch.full_like(terms.cost, no_cost), terms.cost)
        with clock("matching"), full_precision(frames.device):
            x_hat, x_tilde = self._match(cost, state.template_valid, valid)
            matched = torch.einsum("bnm,bmhw->bnhw", x_tilde, proposal_masks)  # Eq. 8
            mass = matched.sum(dim=(-1, -2))
            present = state.template_valid & (mass > cfg.min_match_fraction * height * width)
            # M: the matched proposal itself, P^ divided by the weight X~ kept. Alg. 1 at paper
            # settings gives X^ row maxima around 0.5-0.8 even when the choice is clear, and a mask
            # faded to 0.6 would lose 40 % of its IoU with the next frame's proposals.
            weight = x_tilde.sum(dim=-1).clamp_min(1e-6)[:, :, None, None]
            matched_proposal = matched / weight
        with clock("refinement"):
            keep = present[:, :, None, None]
            logits, lstm = self.refine_logits(feature_maps, matched, matched_proposal, state)
            if lstm is not None:
                lstm = self._keep_absent_state(lstm, state.lstm, present.reshape(-1))
            logits = torch.where(keep, logits, torch.full_like(logits, SUPPRESSED_LOGIT))
        previous = torch.where(keep, matched_proposal if cfg.normalize_previous else matched, state.previous_masks)
        new_state = TrackState(
            state.template_features, state.template_masks, state.template_valid, previous, lstm, state.frame_index + 1
        )
        output = StepOutput(
            logits, cost, terms.cosine, terms.iou, x_hat, x_tilde, matched, matched_proposal, present,
            proposal_masks, real, no_proposal, dict(timings) if timings is not None else {},
        )
        return output, new_state

    def refine_logits(self, feature_maps, matched: torch.Tensor, matched_proposal: torch.Tensor, state: TrackState):
        """Logits [B, n, H, W] and the new ConvLSTM state (None without a head); see the module docstring.

        matched = P^ of Eq. 8 (the head's input, as in Sec. 3), matched_proposal = M = P^ / sum_j X~_ij
        (the matched proposal at full strength), both [B, n, H, W]. ``"pass-through"``: logit(M) plus
        the head's correction; ``"plain"``: the head's output alone; no head: logit(M).
        """
        if self.refinement is None:
            return torch.logit(matched_proposal.clamp(1e-4, 1 - 1e-4)), None
        head, lstm = self.refinement(feature_maps, matched, state.template_masks, state.lstm)
        if self.config.refine_mode == "plain":
            return head, lstm
        prior = torch.logit(matched_proposal.clamp(PASS_THROUGH_EPS, 1 - PASS_THROUGH_EPS))
        return (prior + head).to(head.dtype), lstm  # the head's dtype: bf16/fp16 under autocast, like the plain head

    @staticmethod
    def _keep_absent_state(new: LSTMState, old: LSTMState | None, present: torch.Tensor) -> LSTMState:
        """Per object: the new (hidden, cell) if present, else the old one (zeros at the start)."""
        keep = present[:, None, None, None]
        kept = []
        for k, (h, c) in enumerate(new):
            h_old, c_old = (torch.zeros_like(h), torch.zeros_like(c)) if old is None else old[k]
            kept.append((torch.where(keep, h, h_old), torch.where(keep, c, c_old)))
        return kept
