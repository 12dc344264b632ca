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


#: Table 4 on our benchmark (chapter 9): ``steps`` x ``batch`` training clips per model; ``frame_size``
#: [H, W] at which models train and run; ``seeds``: one set of models each; ``val_videos``: the
#: first N of the val split (None: all); ``refine``: with the refinement head, and its width.
TABLE4 = {
    "smoke": {"steps": 2, "batch": 2, "frame_size": [32, 56], "seeds": (0,), "val_videos": 1,
              "refine": False, "refine_width": 8},
    "cpu": {"steps": 30, "batch": 2, "frame_size": [64, 112], "seeds": (0, 1, 2), "val_videos": 6,
            "refine": False, "refine_width": 16},
    "gpu": {"steps": 2000, "batch": 24, "frame_size": [240, 432], "seeds": (0, 1, 2, 3, 4), "val_videos": None,
            "refine": True, "refine_width": 64},
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
#: ``fixed_loss_clips`` clips on which a model's training objective is compared before and after.
MEASUREMENTS = {
    "smoke": {"held_out_clips": 8, "table4_margin_clips": 4, "fixed_loss_clips": 2},
    "cpu": {"held_out_clips": 24, "table4_margin_clips": 16, "fixed_loss_clips": 8},
    "gpu": {"held_out_clips": 200, "table4_margin_clips": 64, "fixed_loss_clips": 32},
}
