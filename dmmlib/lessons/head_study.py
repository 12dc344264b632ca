"""How the refinement head starts to learn (chapter 8): the paper's plain head against the pass-through head.

:func:`head_start` trains only the head of the book's model (f_theta frozen at the proposal
net's trunk, the same clips, proposals and learning rate for both heads) on one-step clips
(templates from frame 0, one step on frame 1) with the mask loss alone, and records at every
step, before the update, what the head outputs on that batch:

* ``foreground``: the fraction of pixels the output calls foreground (logit > 0), and
  ``object_share`` the object's share of the frame (what ``foreground`` should approach);
* ``iou``: the IoU of the output (logit > 0) with the truth, and ``matched_iou`` that of the
  matched proposal it starts from;
* ``p_object`` / ``p_background``: the mean probability sigmoid(logit) on object / background pixels;
* ``bias_grad_object`` / ``bias_grad_background``: the gradient of the loss with respect to
  the head's output bias, split into the part that object pixels and background pixels
  contribute (the sign says which way each part pushes: positive pulls the bias, and with it
  every pixel, towards "background").
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from dmmlib import losses, refinement, training
from dmmlib import model as model_module
from dmmlib.cost import mask_iou
from dmmlib.lessons import book_models
from dmmlib.lessons.book_models import build_model, model_budget, train_config
from dmmlib.lessons.results import remember
from dmmlib.lessons.settings import MEASUREMENTS
from dmmlib.losses import mask_loss
from dmmlib.profiles import active_profile, by_profile
from dmmlib.unrolled import clip_proposals, collate_clips, object_masks

MODES = ("plain", "pass-through")


def head_study(profile: str | None = None) -> dict:
    """:func:`head_start` at the profile's ``head_start_steps``, measured once per profile and code, then stored."""
    profile = active_profile() if profile is None else profile
    steps = by_profile(MEASUREMENTS, profile)["head_start_steps"]
    return remember("head-start", lambda: head_start(steps, profile), profile=profile,
                    settings={"steps": steps, "budget": model_budget(profile)},
                    code=(sys.modules[__name__], book_models, model_module, refinement, losses, training))


def head_start(steps: int, profile: str | None = None, modes: tuple[str, ...] = MODES, seed: int = 0) -> dict:
    """``{mode: [record per step]}`` (see the module docstring); ``steps`` optimiser steps per head."""
    profile = active_profile() if profile is None else profile
    budget = dict(model_budget(profile))
    return {mode: _run(mode, steps, profile, budget, seed) for mode in modes}


def _run(mode: str, steps: int, profile: str, budget: dict, seed: int) -> list[dict]:
    kind = "ft2-plain" if mode == "plain" else "ft2"
    cfg = dataclasses.replace(train_config(kind, seed, profile, budget), unroll=1)
    model = build_model(cfg, frozen=True).train()
    dataset = training.build_dataset(cfg)
    source = training.make_proposal_source(cfg)
    optimiser = torch.optim.Adam(model.refinement.parameters(), lr=cfg.lr_random)
    records = []
    for step in range(steps):
        indices = [step * cfg.batch_size + k for k in range(cfg.batch_size)]
        frames, labels, metas = collate_clips([dataset[i % len(dataset)] for i in indices])
        proposals = clip_proposals(frames, labels, metas, [(0, i) for i in indices], source, cfg.seed)
        masks = object_masks(labels, cfg.max_objects)
        valid = masks[:, 0].flatten(2).any(-1)
        state = model.init_state(frames[:, 0], masks[:, 0], valid)
        out, _ = model.step(frames[:, 1], proposals[0], state)
        out.logits.retain_grad()
        loss = mask_loss(out.logits, masks[:, 1], valid, cfg.loss)
        optimiser.zero_grad()
        loss.backward()
        records.append(_record(step, out, masks[:, 1], valid, float(loss.detach())))
        optimiser.step()
    return records


def _record(step: int, out, target: torch.Tensor, valid: torch.Tensor, loss: float) -> dict:
    """What the head output on one batch (the valid objects' pixels), before the update."""
    logits, grad = out.logits.detach()[valid], out.logits.grad[valid]  # [k, H, W]
    truth = target[valid] > 0.5
    probability = torch.sigmoid(logits)
    predicted = logits > 0
    iou = mask_iou(predicted[:, None], truth[:, None])[:, 0, 0]
    matched = mask_iou((out.matched_proposals.detach()[valid] > 0.5)[:, None], truth[:, None])[:, 0, 0]
    # d loss / d bias = sum over pixels of d loss / d logit (the bias is added to every logit)
    return {"step": step, "loss": loss, "foreground": float(predicted.float().mean()),
            "object_share": float(truth.float().mean()), "iou": float(iou.mean()), "matched_iou": float(matched.mean()),
            "p_object": float(probability[truth].mean()), "p_background": float(probability[~truth].mean()),
            "bias_grad_object": float(grad[truth].sum()), "bias_grad_background": float(grad[~truth].sum())}
