"""Per-profile sizes of the book's experiments: the one place a chapter's numbers depend on the profile.

Every table maps ``smoke`` / ``cpu`` / ``gpu`` to the sizes of one chapter's experiment;
read them with :func:`dmmlib.profiles.by_profile`, e.g. ``by_profile(MATCHING_CHAPTERS)``.
Notebooks never hard-code a profile-dependent number. (Sizes of the library's own
defaults -- the synthetic benchmark's presets, the proposal network's training, the
model's backbone -- live beside the code they size.)
"""

#: Part I, chapters 1 (the matching problem) and 2 (projections).
#:
#: * ``lp_checks`` -- random cost matrices on which the LP relaxation (HiGHS) is compared
#:   with the Hungarian method and tested for integrality (chapter 1);
#: * ``lp_max_n`` / ``lp_max_m`` -- largest number of templates / proposals of those problems;
#: * ``coin_examples`` -- seeds of the coins scene on which greedy and Hungarian are compared;
#: * ``unimodularity_samples`` -- random square submatrices of the constraint matrix whose
#:   determinant is checked to lie in {-1, 0, 1};
#: * ``projection_examples`` -- random matrices X on which Dykstra and alternating projections
#:   are measured against the exact projection (chapter 2);
#: * ``max_n_proj`` -- the largest number of projection rounds N_proj on those curves (Dykstra's
#:   slowest examples need a few hundred rounds to come within 1e-6 of the projection).
MATCHING_CHAPTERS = {
    "smoke": {"lp_checks": 25, "lp_max_n": 5, "lp_max_m": 8, "coin_examples": 3,
              "unimodularity_samples": 300, "projection_examples": 3, "max_n_proj": 200},
    "cpu": {"lp_checks": 400, "lp_max_n": 8, "lp_max_m": 16, "coin_examples": 20,
            "unimodularity_samples": 5000, "projection_examples": 6, "max_n_proj": 400},
    "gpu": {"lp_checks": 2000, "lp_max_n": 10, "lp_max_m": 25, "coin_examples": 50,
            "unimodularity_samples": 20000, "projection_examples": 10, "max_n_proj": 500},
}


#: Sizes of the convergence study per profile (read with ``by_profile``):
#: ``n_problems`` random ``n_templates`` x ``n_proposals`` problems for the agreement table
#: (``heavy_problems`` of them for the slow 400 x 50 settings); ``curve_problems`` for the gap
#: curves up to ``max_n_grad`` outer iterations.
CONVERGENCE_STUDY = {
    "smoke": {"n_problems": 40, "heavy_problems": 6, "n_templates": 5, "n_proposals": 50,
              "curve_problems": 8, "max_n_grad": 80},
    "cpu": {"n_problems": 400, "heavy_problems": 60, "n_templates": 5, "n_proposals": 50,
            "curve_problems": 32, "max_n_grad": 200},
    "gpu": {"n_problems": 2000, "heavy_problems": 400, "n_templates": 5, "n_proposals": 50,
            "curve_problems": 64, "max_n_grad": 400},
}


#: The convergence explorer of chapter 3 (read with ``by_profile``): the values each control offers,
#: identical in the live and the static explorer. The static page holds a pre-computed state for
#: every combination, so the grid sets its size: ``sizes`` (templates, proposals) -- the chapter's
#: 5 x 50 and a 4 x 12 one whose heat map is easier to read; ``seeds`` problems of each size;
#: step sizes ``lr``; ``n_grad`` and ``n_proj`` (N_grad x N_proj reaches the 400 x 50 of the
#: chapter's "paper, longer" setting); ``lam`` the weight of Eq. 1. ``default`` is the setting
#: shown first: the paper's 40 x 5 at alpha = 0.1 on the chapter's 5 x 50 problems.
CONVERGENCE_EXPLORER = {
    "smoke": {"sizes": ((5, 50), (4, 12)), "seeds": 2, "lr": (0.02, 0.1, 0.5, 2.0), "n_grad": (5, 40, 100),
              "n_proj": (1, 5, 50), "lam": (0.1, 0.3, 0.9),
              "default": {"lr": 0.1, "n_grad": 40, "n_proj": 5, "lam": 0.3}},
    "cpu": {"sizes": ((5, 50), (4, 12)), "seeds": 2, "lr": (0.02, 0.05, 0.1, 0.5, 2.0),
            "n_grad": (5, 10, 20, 40, 100, 400), "n_proj": (1, 2, 5, 20, 50), "lam": (0.1, 0.3, 0.9),
            "default": {"lr": 0.1, "n_grad": 40, "n_proj": 5, "lam": 0.3}},
    "gpu": {"sizes": ((5, 50), (4, 12)), "seeds": 3, "lr": (0.02, 0.05, 0.1, 0.2, 0.5, 2.0),
            "n_grad": (5, 10, 20, 40, 100, 400), "n_proj": (1, 2, 5, 20, 50), "lam": (0.1, 0.3, 0.5, 0.9),
            "default": {"lr": 0.1, "n_grad": 40, "n_proj": 5, "lam": 0.3}},
}


#: Sizes of the cost-learning experiment per profile (read with ``by_profile``): ``n_train`` training
#: and ``n_test`` held-out problems of ``n_templates`` x ``n_proposals`` with ``feature_dim``-d
#: features; ``steps`` Adam steps of learning rate ``lr`` on minibatches of ``batch_size`` problems;
#: held-out accuracy every ``eval_every`` steps.
COST_LEARNING = {
    "smoke": {"n_train": 256, "n_test": 128, "n_templates": 4, "n_proposals": 20, "feature_dim": 32,
              "batch_size": 16, "steps": 30, "lr": 0.005, "eval_every": 5},
    "cpu": {"n_train": 1024, "n_test": 400, "n_templates": 4, "n_proposals": 20, "feature_dim": 32,
            "batch_size": 32, "steps": 300, "lr": 0.005, "eval_every": 10},
    "gpu": {"n_train": 4096, "n_test": 2000, "n_templates": 5, "n_proposals": 50, "feature_dim": 32,
            "batch_size": 64, "steps": 1500, "lr": 0.005, "eval_every": 50},
}


#: The book's DMM-Nets (chapters 8, 9, 11; :mod:`dmmlib.lessons.book_models`). Every model trains
#: ``steps`` steps of ``batch`` clips at ``frame_size`` [H, W], f_theta initialised from the proposal
#: net's trunk and reading its ``levels`` (the CPU detector has no conv5), the pass-through head of
#: ``refine_width`` channels, Adam at ``lr_pretrained`` (f_theta) / ``lr_random`` (head) decayed along
#: ``lr_schedule`` (dmmlib.training.lr_factor; the paper's rates are constant), the mask loss
#: plus ``assignment_loss_weight`` x the cross-entropy of X^ (dmmlib.losses); each clip starts with up
#: to ``burn_in`` frames tracked without gradient (dmmlib.unrolled); a checkpoint every
#: ``checkpoint_every`` steps; the held-out loss on ``heldout_clips`` val clips every ``heldout_every`` steps.
BOOK_MODELS = {
    "smoke": {"steps": 3, "batch": 2, "frame_size": [32, 56], "levels": ("conv2", "conv3", "conv4"),
              "refine_width": 4, "lr_pretrained": 1e-4, "lr_random": 1e-3, "assignment_loss_weight": 1.0,
              "burn_in": 1, "lr_schedule": "cosine", "checkpoint_every": 2, "heldout_clips": 2, "heldout_every": 3},
    "cpu": {"steps": 80, "batch": 4, "frame_size": [96, 176], "levels": ("conv2", "conv3", "conv4"),
            "refine_width": 16, "lr_pretrained": 1e-4, "lr_random": 1e-3, "assignment_loss_weight": 1.0,
            "burn_in": 4, "lr_schedule": "cosine", "checkpoint_every": 20, "heldout_clips": 16, "heldout_every": 16},
    "gpu": {"steps": 2000, "batch": 24, "frame_size": [240, 432], "levels": ("conv2", "conv3", "conv4", "conv5"),
            "refine_width": 64, "lr_pretrained": 1e-4, "lr_random": 1e-3, "assignment_loss_weight": 1.0,
            "burn_in": 4, "lr_schedule": "cosine", "checkpoint_every": 100, "heldout_clips": 64, "heldout_every": 100},
}

#: Table 4 on our benchmark (chapter 9): ``seeds`` (one set of models each: the head's initial weights,
#: the training clips and their augmentation); ``row_seeds``: rows run on fewer seeds (the most
#: expensive models: unroll 3 costs about 1.5x unroll 2 per step, and the ablation and unroll 1 test no
#: claim of the paper's Table 4 directly); ``val_videos``: the first N of the val split (None: all).
#:
#: The cpu plan's time budget (2 cores; the whole book must build in under 30 minutes). The models train
#: and are evaluated two at a time (WORKERS); see BOOK_MODELS for the time per step. Not two seeds for a
#: claim's row: the paired difference's interval has one degree of freedom then (t = 12.7; unroll 3 on
#: seeds 0-1 read -0.9 [-25.0, +23.3]), wider than one seed's interval over the videos alone.
#:
#: Why 80 steps with a burn-in of 4 (measured on 2026-11-30, seed 0, J&F on all val videos; unroll 2):
#:
#: * 40 steps, no burn-in (the plan until then): frozen layer 27.5, fine-tuned 25.4.
#: * 160 steps, no burn-in (a fresh build of 24.8 min): frozen 21.5, fine-tuned 24.1 -- every held-out
#:   loss fell, J&F fell with it. Why: the head's ConvLSTM only ever trained on memory 1-2 frames old.
#:   Output minus matched-proposal IoU by frame (frozen layer): +0.000 on frames 1-2, -0.047 on 3-5,
#:   -0.070 on 6-10, -0.082 on 11-19; with the memory reset every frame -0.012 overall.
#: * 160 steps, burn-in 6: frozen 25.6, fine-tuned 26.5; output minus matched -0.014 to -0.023 at every
#:   age (the collapse after frame 2 is gone; the head still does not beat the proposal it starts from).
#: * 80 steps, burn-in 6: frozen 26.8, fine-tuned 27.2 (a fresh build with it took 33.5 min on a slow
#:   afternoon; 3 seeds: frozen layer 26.7, fine-tuned unroll 2 27.1). Learning-rate warm-up over 20
#:   steps: 26.9 and 27.4, no better (not kept). BCE instead of the soft IoU: 26.5 and 25.8.
#: * 80 steps, burn-in 4 (this plan): frozen 26.7, fine-tuned 29.0, output minus matched -0.002 to -0.006
#:   at every age; 76 s (frozen) and 106 s (unroll 2) of training in one of two one-thread processes.
#: The held-out loss is measured at the longest burn-in, where fine-tuning first raises it (the
#: assignment cross-entropy: X^ grows more confident, so its wrong matches cost more) before it falls.
#:
#: Why a cosine decay of the learning rates (measured on 2026-11-30, seed 0, burn-in 4, 16 held-out
#: clips): with constant rates the held-out curves of the fine-tuned models were still moving at step 80
#: (the book's last build: 4 of 11 curves flat). Decayed along a cosine, 80 steps give J&F 27.8 (frozen)
#: and 28.2 (fine-tuned), against 26.7 and 29.0 at constant rates, and a held-out loss that has stopped
#: moving: a run twice as long (160 steps, cosine) ends at 2.385 and 2.510 against 2.397 and 2.504 after
#: 80, with J&F 26.7 and 26.7. More steps buy no held-out objective here. The Lovasz hinge (a surrogate
#: of the thresholded IoU) instead of the soft IoU kept the frozen model's held-out thresholded IoU
#: from falling (0.459 -> 0.460 against 0.459 -> 0.446) but gave J&F 27.8 and 27.2: not kept.
#: 16 held-out clips every 16 steps (6 points of about 4 s) cost about 6 s more per model than 8 every 10
#: (9 points of about 2 s), and halve the variance that the choice of clips adds to each point.
TABLE4 = {
    # smoke's row_seeds names the ablation only so that a gpu dry run caps the gpu entry's seeds of it
    "smoke": {"seeds": (0,), "row_seeds": {"ft-unroll2-plain": (0,)}, "val_videos": 2},
    "cpu": {"seeds": (0, 1, 2), "row_seeds": {"ft-unroll1": (0,), "ft-unroll2-plain": (0,)},
            "val_videos": None},
    "gpu": {"seeds": (0, 1, 2, 3, 4), "row_seeds": {"ft-unroll2-plain": (0, 1, 2)}, "val_videos": None},
}


# Sizes of the generated fixtures and of the tiny runs, per profile (the chapter reads them from here).
REAL_BENCHMARKS = {
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


#: Chapters 8 and 9: ``held_out_clips`` clips on which a model's matching margins are measured,
#: ``fixed_loss_clips`` clips on which a model's training objective is compared before and after,
#: ``head_start_steps`` steps of the plain and the pass-through head in chapter 8's head study.
MEASUREMENTS = {
    "smoke": {"held_out_clips": 4, "table4_margin_clips": 2, "fixed_loss_clips": 2, "head_start_steps": 2},
    "cpu": {"held_out_clips": 24, "table4_margin_clips": 12, "fixed_loss_clips": 8, "head_start_steps": 40},
    "gpu": {"held_out_clips": 200, "table4_margin_clips": 64, "fixed_loss_clips": 32, "head_start_steps": 200},
}


#: The build's per-cell time limit in seconds (``jupyter-book build``; ``tools/book_timeouts.py`` reads it
#: through :func:`cell_timeout`). smoke: CI, every notebook well under a minute; cpu: the default build,
#: under 30 minutes in all; gpu: a build that did *not* run ``python -m dmmlib.lessons.run all`` first
#: trains inside its cells -- chapter 6's proposal net (20,000 steps) in one cell, chapter 9 one seed's
#: Table 4 models per cell -- so its limit is a day: a bound that catches a hung kernel, not a budget.
#: Not a size: a dry run (``DMM_DRY_RUN=1``) keeps the gpu limit, so it is read without ``by_profile``.
CELL_TIMEOUT_S = {"smoke": 600, "cpu": 1800, "gpu": 24 * 3600}

#: Processes that train or evaluate the book's models side by side (chapters 8 and 9;
#: :func:`dmmlib.lessons.book_models.in_processes`), each with one torch thread. On a 2-core CPU two
#: one-thread processes get more done than one two-thread process: much of a training step is small
#: operations that one thread runs in sequence. One on a GPU (the processes would share it), and in the
#: smoke profile, whose units take seconds, less than starting a process.
WORKERS = {"smoke": 1, "cpu": 2, "gpu": 1}


def cell_timeout(profile: str) -> int:
    """The per-cell time limit of a book build in ``profile`` (:data:`CELL_TIMEOUT_S`)."""
    return CELL_TIMEOUT_S[profile]
