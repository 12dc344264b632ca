"""Learning a matching cost by back-propagating through the matching layer (chapter 4).

The point of a *differentiable* matching layer (Sec. 3, Alg. 1) is that the cost of Eq. 1,

    C_ij = (lam - 1) cos(f_theta(p_j), f_theta(r_i)) - lam IoU(p_j, r_i),

can be learned: a loss on the assignment X^ sends gradients through Alg. 1 into theta. This
module holds a small, fully synthetic experiment of exactly that:

* :func:`appearance_change_problems` -- matching problems whose raw appearance features mislead:
  between the reference frame and the current one an unknown, fixed *appearance change* (think
  lighting) moves every object's "look", and each template has a look-alike distractor that
  kept the template's old look. Cosine similarity of the raw features prefers the look-alike;
  the IoU term of Eq. 1 cannot separate the two either.
* :class:`EmbeddingCost` -- Eq. 1 with a learnable linear embedding f_theta(x) = W x
  (initialised to the identity, i.e. the raw features).
* :func:`matching_loss` -- the negative log-likelihood of the true proposal under each row of X^.
* :func:`train_cost` -- Adam on W through a matcher (``"dmm"``: :func:`~dmmlib.matching.dmm_match`;
  ``"sinkhorn"``: :func:`~dmmlib.matching.sinkhorn_match`), evaluating on held-out problems the
  accuracy of the *Hungarian* assignment on the learned cost (what inference would use).

Everything is seeded and runs on the CPU in float32, one thread (the layer's gradients are checked in float64
by the chapter's gradcheck). Sizes per profile: :data:`COST_LEARNING`, read with ``by_profile``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dmmlib import matchers, matching, projections
from dmmlib.errors import DMMInputError
from dmmlib.lessons.results import remember
from dmmlib.lessons.settings import COST_LEARNING
from dmmlib.matchers import hungarian_match, sinkhorn_match
from dmmlib.matching import PAPER_SETTINGS, dmm_match
from dmmlib.profiles import by_profile

__all__ = [
    "MATCHERS", "AppearanceProblems", "appearance_change_problems", "EmbeddingCost",
    "matching_loss", "assignment_accuracy", "training_step", "TrainingRun", "train_cost", "subspace_gain",
    "row_softmax", "CONTROL",
]


def row_softmax(cost: Tensor, tau: float = 0.1) -> Tensor:
    """softmax(-C / tau) along each row: a soft choice per template, no column constraint.

    ``cost`` [B, n, m] -> [B, n, m]. Not a matching layer: two templates may pick the same
    proposal. Chapter 4 trains through it as a control, to see what the matching layer adds to
    the loss's own signal.
    """
    return torch.softmax(-cost / tau, dim=-1)


#: The differentiable matchers a cost can be trained through, with their settings: the paper's
#: Alg. 1 (Sec. 4.1: N_grad = 40, N_proj = 5, alpha = 0.1) and the entropic (Sinkhorn) layer; and,
#: as a control, a per-row softmax with no matching layer.
MATCHERS = {
    "dmm": {"fn": dmm_match, "kwargs": dict(PAPER_SETTINGS)},
    "sinkhorn": {"fn": sinkhorn_match, "kwargs": {"tau": 0.1, "n_iter": 50}},
    "row-softmax": {"fn": row_softmax, "kwargs": {"tau": 0.1}},
}
#: The control of chapter 4's learning runs: the same loss with no matching layer at all.
CONTROL = "per-row softmax (no matching layer)"


# proposal kinds, for figures
OBJECT, LOOK_ALIKE, CLUTTER = 0, 1, 2


# ----------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class AppearanceProblems:
    """A batch of matching problems with features, all float32 unless noted.

    * ``template_features`` [B, n, d] -- f(r_i), the templates in the reference frame
    * ``proposal_features`` [B, m, d] -- f(p_j), the proposals in the current frame
    * ``iou`` [B, n, m] -- IoU(p_j, r_i)
    * ``true_proposal`` [B, n] int64 -- the proposal that is template i's object
    * ``kind`` [B, m] int64 -- OBJECT (0), LOOK_ALIKE (1) or CLUTTER (2)
    * ``identity_basis`` [d, k] -- the (hidden) directions that carry object identity; the rest
      of feature space carries the "look" that the appearance change alters. For analysis only.
    * ``lam`` -- lambda of Eq. 1
    """

    template_features: Tensor
    proposal_features: Tensor
    iou: Tensor
    true_proposal: Tensor
    kind: Tensor
    identity_basis: Tensor
    lam: float

    def __len__(self) -> int:
        return self.template_features.shape[0]

    def subset(self, index: Tensor) -> "AppearanceProblems":
        """The problems at ``index`` (a LongTensor of problem indices)."""
        return AppearanceProblems(self.template_features[index], self.proposal_features[index],
                                  self.iou[index], self.true_proposal[index], self.kind[index],
                                  self.identity_basis, self.lam)

    def raw_cost(self) -> Tensor:
        """Eq. 1 on the raw features (the identity embedding): [B, n, m]."""
        cosine = _cosine(self.template_features, self.proposal_features)
        return (self.lam - 1.0) * cosine - self.lam * self.iou


def _cosine(templates: Tensor, proposals: Tensor) -> Tensor:
    """cos(p_j, r_i): [B, n, d], [B, m, d] -> [B, n, m]."""
    t = torch.nn.functional.normalize(templates, dim=-1)
    p = torch.nn.functional.normalize(proposals, dim=-1)
    return t @ p.transpose(-2, -1)


def _random_orthogonal(d: int, g: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


def appearance_change_problems(n_problems: int, n_templates: int = 4, n_proposals: int = 20,
                               feature_dim: int = 32, identity_dim: int = 8, lam: float = 0.3,
                               change: float = 0.5, identity_noise: float = 0.7, seed: int = 0, world_seed: int = 0) -> AppearanceProblems:
    """Matching problems where raw appearance picks the wrong proposal unless the cost is learned.

    Feature space R^d is split by a hidden random rotation Q = [Q_id | Q_look] into ``identity_dim``
    directions that say *which object* it is and d - identity_dim directions that say how it
    *looks* (lighting, colour). A template's feature is f = Q_id a + Q_look b, a, b ~ N(0, I).

    In the current frame a fixed appearance change, the same for every problem drawn with the same
    ``world_seed`` (it is the "world" the cost must learn), acts on the look only:
    b -> M b + c with M = (1 - change) I + change R (R a random rotation) and c a colour cast.

    * the object itself: identity a + noise, look M b + c + noise;
    * a look-alike per template: another identity, but the template's *old* look b + noise
      (an object that, under the new lighting, looks like the template did);
    * clutter (the rest): random identity, random look under the new lighting.

    IoU cannot tell the object from its look-alike (both drawn from U(0.2, 0.7): the look-alike
    is next to it); clutter has small IoU. So Eq. 1 on raw features is ambiguous, and a linear
    embedding that keeps the identity directions and drops the look would solve it.
    Proposal order is shuffled. ``seed`` draws the problems; train and test sets share
    ``world_seed`` and differ in ``seed``.
    """
    for name, value in (("n_problems", n_problems), ("n_templates", n_templates), ("n_proposals", n_proposals),
                        ("feature_dim", feature_dim), ("identity_dim", identity_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DMMInputError(f"{name}={value!r}; expected a positive integer")
    if n_proposals < 2 * n_templates:
        raise DMMInputError(f"n_proposals={n_proposals}; expected at least 2 * n_templates = {2 * n_templates} "
                            f"(an object and a look-alike per template)")
    if not identity_dim < feature_dim:
        raise DMMInputError(f"identity_dim={identity_dim} must be < feature_dim={feature_dim}")
    if not 0.0 < lam < 1.0:
        raise DMMInputError(f"lam={lam!r}; Eq. 1 needs 0 < lambda < 1")
    if not 0.0 <= change <= 1.0:
        raise DMMInputError(f"change={change!r}; expected a number in [0, 1]")

    d, k = feature_dim, identity_dim
    world = torch.Generator().manual_seed(10_007 * world_seed + 1)
    Q = _random_orthogonal(d, world)
    Q_id, Q_look = Q[:, :k], Q[:, k:]
    M = (1.0 - change) * torch.eye(d - k, dtype=torch.float64) + change * _random_orthogonal(d - k, world)
    cast = 0.5 * torch.randn(d - k, generator=world, dtype=torch.float64)

    g = torch.Generator().manual_seed(seed)
    B, n, m = n_problems, n_templates, n_proposals

    def normal(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    def relight(look):  # the appearance change of the current frame
        return look @ M.T + cast

    a, b = normal(B, n, k), normal(B, n, d - k)
    template = a @ Q_id.T + b @ Q_look.T
    obj = (a + normal(B, n, k, scale=identity_noise)) @ Q_id.T + (relight(b) + normal(B, n, d - k, scale=0.3)) @ Q_look.T
    look_alike = normal(B, n, k) @ Q_id.T + (b + normal(B, n, d - k, scale=0.3)) @ Q_look.T
    n_clutter = m - 2 * n
    clutter = normal(B, n_clutter, k) @ Q_id.T + relight(normal(B, n_clutter, d - k)) @ Q_look.T
    proposals = torch.cat([obj, look_alike, clutter], 1)  # [B, m, d]

    # IoU with template i: its object and its look-alike overlap it alike; everything else barely
    iou = uniform(B, n, m).pow(3) * 0.3
    rows = torch.arange(n)
    iou[:, rows, rows] = uniform(B, n, low=0.2, high=0.7)
    iou[:, rows, n + rows] = uniform(B, n, low=0.2, high=0.7)
    kind = torch.cat([torch.full((n,), OBJECT), torch.full((n,), LOOK_ALIKE),
                      torch.full((n_clutter,), CLUTTER)]).expand(B, m)

    order = torch.stack([torch.randperm(m, generator=g) for _ in range(B)])  # [B, m]: new -> old index
    proposals = proposals.gather(1, order[..., None].expand(-1, -1, d))
    iou = iou.gather(2, order[:, None, :].expand(-1, n, -1))
    kind = kind.gather(1, order)
    true_proposal = order.argsort(1)[:, :n]
    f32 = torch.float32
    return AppearanceProblems(template.to(f32), proposals.to(f32), iou.to(f32), true_proposal,
                              kind.contiguous(), Q_id.to(f32), float(lam))


# ----------------------------------------------------------------------------- the learnable cost


class EmbeddingCost(torch.nn.Module):
    """Eq. 1 with a learnable linear feature map f_theta(x) = W x, W [d, d] initialised to I.

    ``forward(problems)`` -> C [B, n, m] = (lam - 1) cos(W f(p_j), W f(r_i)) - lam IoU(p_j, r_i).
    With W = I this is Eq. 1 on the raw features. W is shared by templates and proposals (a
    Siamese map, like DMM-Net's single feature extractor f_theta).
    """

    def __init__(self, feature_dim: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(feature_dim))

    def forward(self, problems: AppearanceProblems) -> Tensor:
        cosine = _cosine(problems.template_features @ self.weight.T, problems.proposal_features @ self.weight.T)
        return (problems.lam - 1.0) * cosine - problems.lam * problems.iou


def matching_loss(X: Tensor, true_proposal: Tensor, eps: float = 1e-6) -> Tensor:
    """Cross-entropy of each row of the soft assignment against the true proposal.

    L = -mean_{b, i} log(X[b, i, true_i] + eps); X [B, n, m] (rows sum to ~1), true_proposal
    [B, n] -> scalar. ``eps`` keeps the log finite where Alg. 1's ReLU left an exact zero.
    """
    picked = X.gather(-1, true_proposal.unsqueeze(-1)).squeeze(-1)
    return -(picked + eps).log().mean()


def assignment_accuracy(cost: Tensor, true_proposal: Tensor) -> float:
    """Fraction of templates that the Hungarian assignment of ``cost`` [B, n, m] gives their true proposal."""
    with torch.no_grad():
        picked = hungarian_match(cost).argmax(-1)
    return (picked == true_proposal).double().mean().item()


def subspace_gain(weight: Tensor, identity_basis: Tensor) -> tuple[float, float]:
    """RMS gain of W on the hidden identity directions and on the look directions.

    weight [d, d], identity_basis [d, k] -> (||W Q_id||_F / sqrt(k), ||W Q_look||_F / sqrt(d - k)),
    where Q_look spans the orthogonal complement of Q_id. Both are 1 for W = I.
    """
    W = weight.detach().double()
    Q_id = identity_basis.double()
    d, k = Q_id.shape
    on_identity = torch.linalg.matrix_norm(W @ Q_id) / math.sqrt(k)
    total = torch.linalg.matrix_norm(W)
    on_look = (total.square() - torch.linalg.matrix_norm(W @ Q_id).square()).clamp_min(0).sqrt() / math.sqrt(d - k)
    return on_identity.item(), on_look.item()


# ----------------------------------------------------------------------------- training


def _matcher(name: str):
    if name not in MATCHERS:
        raise DMMInputError(f"matcher={name!r}; expected one of {sorted(MATCHERS)}")
    entry = MATCHERS[name]
    return entry["fn"], entry["kwargs"]


def training_step(model: EmbeddingCost, batch: AppearanceProblems, optimizer: torch.optim.Optimizer,
                  matcher: str = "dmm", **matcher_kwargs) -> float:
    """One Adam step: cost -> matcher -> :func:`matching_loss` -> backward through the matcher into W.

    ``matcher_kwargs`` override the :data:`MATCHERS` settings (e.g. ``tau=0.05``). Returns the loss
    before the step.
    """
    fn, kwargs = _matcher(matcher)
    optimizer.zero_grad(set_to_none=True)
    X = fn(model(batch), **{**kwargs, **matcher_kwargs})
    loss = matching_loss(X, batch.true_proposal)
    loss.backward()
    optimizer.step()
    return loss.item()


@dataclass
class TrainingRun:
    """What :func:`train_cost` measured.

    ``eval_steps`` [E] (0 = before training) with ``test_accuracy`` [E] (Hungarian on the learned
    cost, held-out problems); ``train_loss`` [steps]; ``seconds_per_step`` (median wall time of a
    step: forward, backward, Adam); ``weight`` the learned W [d, d].
    """

    matcher: str
    matcher_kwargs: dict
    eval_steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds_per_step: float = float("nan")
    weight: Tensor | None = None


def train_cost(train: AppearanceProblems, test: AppearanceProblems, matcher: str = "dmm", steps: int = 100,
               batch_size: int = 32, lr: float = 0.005, eval_every: int = 10, seed: int = 0,
               **matcher_kwargs) -> TrainingRun:
    """Learn W of :class:`EmbeddingCost` (from W = I) by Adam through ``matcher``; deterministic given ``seed``.

    Minibatches of ``batch_size`` training problems are drawn with a seeded generator. Every
    ``eval_every`` steps (and before the first and after the last) the held-out accuracy of the
    Hungarian assignment on the current cost is recorded.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DMMInputError(f"{name}={value!r}; expected a positive integer")
    _matcher(matcher)
    # the tensors are tiny: one thread is faster than two fighting over them, and times are fairer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(train, test, matcher, steps, batch_size, lr, eval_every, seed, matcher_kwargs)
    finally:
        torch.set_num_threads(threads)


def _train(train, test, matcher, steps, batch_size, lr, eval_every, seed, matcher_kwargs) -> TrainingRun:
    g = torch.Generator().manual_seed(seed)
    model = EmbeddingCost(train.template_features.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run = TrainingRun(matcher, dict(matcher_kwargs))

    def evaluate(step):
        with torch.no_grad():
            run.eval_steps.append(step)
            run.test_accuracy.append(assignment_accuracy(model(test), test.true_proposal))

    evaluate(0)
    times = []
    for step in range(1, steps + 1):
        batch = train.subset(torch.randint(len(train), (batch_size,), generator=g))
        start = time.perf_counter()
        run.train_loss.append(training_step(model, batch, optimizer, matcher, **matcher_kwargs))
        times.append(time.perf_counter() - start)
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    run.seconds_per_step = float(torch.tensor(times).median())
    run.weight = model.weight.detach().clone()
    return run


#: The runs of chapter 4 (cited by the report card): Alg. 1, the Sinkhorn layer at two temperatures,
#: and the control with no matching layer.
LEARNING_SETTINGS = {
    "Alg. 1 (40 x 5)": ("dmm", {}),
    "Sinkhorn, τ = 0.1": ("sinkhorn", {"tau": 0.1}),
    "Sinkhorn, τ = 0.05": ("sinkhorn", {"tau": 0.05}),
    CONTROL: ("row-softmax", {}),
}


def chapter_problems(profile: str | None = None) -> tuple[AppearanceProblems, AppearanceProblems]:
    """Chapter 4's training and held-out problems at the profile's :data:`~dmmlib.lessons.settings.COST_LEARNING` sizes."""
    sizes = by_profile(COST_LEARNING, profile)
    shape = (sizes["n_templates"], sizes["n_proposals"], sizes["feature_dim"])
    return (appearance_change_problems(sizes["n_train"], *shape, seed=1),
            appearance_change_problems(sizes["n_test"], *shape, seed=2))


def learning_runs(profile: str | None = None) -> dict:
    """Chapter 4's learning runs, measured once per profile (:func:`dmmlib.lessons.results.remember`).

    ``{"runs": {name: TrainingRun}, "wall": {name: seconds}}`` for every entry of
    :data:`LEARNING_SETTINGS`: the same start, the same minibatches, Hungarian at test time.
    """
    sizes = by_profile(COST_LEARNING, profile)

    def measure() -> dict:
        train, test = chapter_problems(profile)
        runs, wall = {}, {}
        for name, (matcher, kwargs) in LEARNING_SETTINGS.items():
            start = time.perf_counter()
            runs[name] = train_cost(train, test, matcher, steps=sizes["steps"], batch_size=sizes["batch_size"],
                                    lr=sizes["lr"], eval_every=sizes["eval_every"], seed=0, **kwargs)
            wall[name] = time.perf_counter() - start
        return {"runs": runs, "wall": wall}

    return remember("cost-learning", measure, settings={"sizes": sizes, "runs": LEARNING_SETTINGS},
                    code=(sys.modules[__name__], matching, matchers, projections), profile=profile)
