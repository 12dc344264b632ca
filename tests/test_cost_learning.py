"""dmmlib.cost_learning: the appearance-change task and learning a cost through the matching layer."""

import pytest
import torch

from dmmlib.errors import DMMInputError
from dmmlib.lessons.cost_learning import (
    CLUTTER,
    LOOK_ALIKE,
    OBJECT,
    EmbeddingCost,
    appearance_change_problems,
    assignment_accuracy,
    matching_loss,
    row_softmax,
    subspace_gain,
    train_cost,
    training_step,
)
from dmmlib.matching import dmm_match


def test_problems_have_documented_shapes_and_labels():
    p = appearance_change_problems(6, n_templates=3, n_proposals=10, feature_dim=16, identity_dim=4, seed=1)
    assert p.template_features.shape == (6, 3, 16) and p.proposal_features.shape == (6, 10, 16)
    assert p.iou.shape == (6, 3, 10) and p.true_proposal.shape == (6, 3) and p.kind.shape == (6, 10)
    assert p.identity_basis.shape == (16, 4) and len(p) == 6
    assert p.true_proposal.dtype == torch.int64 and p.template_features.dtype == torch.float32
    # the true proposals are distinct objects, and each problem has n objects and n look-alikes
    assert (p.kind.gather(1, p.true_proposal) == OBJECT).all()
    assert ((p.kind == OBJECT).sum(1) == 3).all() and ((p.kind == LOOK_ALIKE).sum(1) == 3).all()
    assert ((p.kind == CLUTTER).sum(1) == 4).all()
    assert torch.allclose(p.identity_basis.T @ p.identity_basis, torch.eye(4), atol=1e-5)
    assert (p.iou >= 0).all() and (p.iou <= 1).all()


def test_problems_are_deterministic_and_share_the_world():
    a = appearance_change_problems(4, seed=3)
    b = appearance_change_problems(4, seed=3)
    c = appearance_change_problems(4, seed=4)
    for name in ("template_features", "proposal_features", "iou", "true_proposal", "kind"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.template_features, c.template_features)
    # train and test sets (different seeds) live in the same world; another world differs
    assert torch.equal(a.identity_basis, c.identity_basis)
    assert not torch.equal(a.identity_basis, appearance_change_problems(4, seed=3, world_seed=1).identity_basis)


def test_raw_appearance_is_ambiguous_but_the_identity_directions_are_not():
    p = appearance_change_problems(200, seed=5)
    cosine = EmbeddingCost(p.template_features.shape[-1])(p)  # W = I: Eq. 1 on raw features
    assert torch.allclose(cosine, p.raw_cost(), atol=1e-6)
    raw = assignment_accuracy(p.raw_cost(), p.true_proposal)
    picked = p.raw_cost().argmin(-1)
    look_alike_rate = (p.kind.gather(1, picked) == LOOK_ALIKE).double().mean().item()
    oracle = EmbeddingCost(p.template_features.shape[-1])
    with torch.no_grad():
        oracle.weight.copy_(p.identity_basis @ p.identity_basis.T)  # keep identity, drop the look
    learned = assignment_accuracy(oracle(p), p.true_proposal)
    assert raw < 0.5 and look_alike_rate > 0.4
    assert learned > raw + 0.4


def test_matching_loss_is_the_row_cross_entropy():
    X = torch.tensor([[[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]])
    true = torch.tensor([[0, 2]])
    assert torch.isclose(matching_loss(X, true, eps=0.0), -torch.tensor(0.5).log() / 2)


def test_gradients_reach_the_embedding_through_dmm_match():
    p = appearance_change_problems(4, seed=6)
    model = EmbeddingCost(p.template_features.shape[-1])
    matching_loss(dmm_match(model(p)), p.true_proposal).backward()
    grad = model.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("matcher", ["dmm", "sinkhorn", "row-softmax"])
def test_one_training_step_reduces_the_loss_on_a_fixed_batch(matcher):
    p = appearance_change_problems(16, seed=7)
    model = EmbeddingCost(p.template_features.shape[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = training_step(model, p, optimizer, matcher)
    with torch.no_grad():
        from dmmlib.lessons.cost_learning import MATCHERS
        entry = MATCHERS[matcher]
        after = matching_loss(entry["fn"](model(p), **entry["kwargs"]), p.true_proposal).item()
    assert after < before


def test_the_control_is_a_per_row_softmax_with_no_column_constraint():
    cost = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]])  # both templates prefer proposal 0
    X = row_softmax(cost, tau=0.5)
    expected = torch.exp(-cost[0, 0] / 0.5) / torch.exp(-cost[0, 0] / 0.5).sum()
    assert torch.allclose(X[0, 0], expected) and torch.allclose(X[0, 1], expected)
    assert X[0, :, 0].sum() > 1.5  # column sums are not limited: both rows choose proposal 0


def test_train_cost_is_deterministic_and_improves_held_out_accuracy():
    train = appearance_change_problems(64, seed=8)
    test = appearance_change_problems(64, seed=9)
    a = train_cost(train, test, "sinkhorn", steps=12, batch_size=8, lr=0.01, eval_every=6, seed=0)
    b = train_cost(train, test, "sinkhorn", steps=12, batch_size=8, lr=0.01, eval_every=6, seed=0)
    assert a.eval_steps == [0, 6, 12] and len(a.train_loss) == 12
    assert a.train_loss == b.train_loss and torch.equal(a.weight, b.weight)
    assert a.test_accuracy[-1] > a.test_accuracy[0]
    on_identity, on_look = subspace_gain(a.weight, train.identity_basis)
    assert on_identity > on_look
    assert subspace_gain(torch.eye(32), train.identity_basis) == pytest.approx((1.0, 1.0))


def test_bad_arguments_are_named():
    with pytest.raises(DMMInputError, match="n_proposals=5"):
        appearance_change_problems(2, n_templates=4, n_proposals=5)
    with pytest.raises(DMMInputError, match="identity_dim"):
        appearance_change_problems(2, feature_dim=8, identity_dim=8)
    p = appearance_change_problems(2)
    with pytest.raises(DMMInputError, match="matcher='hungarian'"):
        train_cost(p, p, "hungarian", steps=1)
