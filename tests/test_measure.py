"""dmmlib.lessons.measure: scoring a model on val videos with the library's tracking loop."""

from __future__ import annotations

import pytest

from dmmlib.data.davis import DavisDataset
from dmmlib.lessons.measure import VideoScoring, ground_truth_proposals, score_videos
from dmmlib.model import DMMNet, ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_score_videos_scores_oracle_tracking_high(smoke_benchmark):
    # no refinement, IoU-only cost, exact proposals: the matched ground truth is the output
    model = DMMNet(ModelConfig(refine=False, lam=1.0, matcher="dmm"))
    names = DavisDataset(smoke_benchmark, "val").names
    exact_proposals = ground_truth_proposals(smoke_benchmark, "val", n_noise=0, jitter=0.0)
    diagnostics: dict = {}
    exact = score_videos(model, smoke_benchmark, names, exact_proposals, VideoScoring(matcher="hungarian",
                                                                                     diagnostics=diagnostics))
    assert model.config.matcher == "dmm"  # the matcher override worked on a copy
    perfect = [j for j in exact["J_per_object"].values() if j > 0.99]
    assert exact["J_M"] > 0.6 and len(perfect) >= len(exact["J_per_object"]) / 2, exact
    # every visible object had its exact proposal, so the diagnostics say so
    assert diagnostics["has_right"] and min(diagnostics["has_right"]) == 1.0
    noisy = score_videos(model, smoke_benchmark, names, ground_truth_proposals(smoke_benchmark, "val", 4, 0.2),
                         VideoScoring(matcher="hungarian"))
    assert 0 <= noisy["J_M"] < exact["J_M"] and 0 <= noisy["F_M"] <= 1
