"""DMMNet: shapes, Eq. 1 and Eq. 8 by hand, oracle tracking, gradients, checkpoints, weights."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode
from torchvision.ops import roi_align

from dmmlib.checkpoints import load_checkpoint, save_checkpoint
from dmmlib.cost import PADDING_COST, matching_cost, soft_iou
from dmmlib.errors import DMMInputError
from dmmlib.features import FeatureExtractor, masks_to_boxes
from dmmlib.matchers import greedy_match, hungarian_match
from dmmlib.matching import dmm_match
from dmmlib.model import DMMNet, default_config, labels_from_logits
from dmmlib.proposals import FrameProposals, proposals_from_labels
from dmmlib.refinement import ConvLSTMCell, RefinementHead

H, W = 48, 64


def rectangles_video(T=6, absent=()):
    """Two rectangles on noise: object 1 moves right 2 px per frame, object 2 stays (and
    disappears in the frames listed in ``absent``). Returns frames uint8 [H, W, 3] and labels."""
    rng = np.random.default_rng(0)
    frames, labels = [], []
    for t in range(T):
        lab = np.zeros((H, W), np.uint8)
        lab[8:20, 4 + 2 * t : 20 + 2 * t] = 1
        if t not in absent:
            lab[26:42, 30:50] = 2
        img = rng.integers(0, 60, (H, W, 3)).astype(np.uint8)
        img[lab == 1] = (200, 40, 40)
        img[lab == 2] = (40, 200, 40)
        frames.append(img)
        labels.append(lab)
    return frames, labels


def to_tensor(frame):
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0


def templates_of(label, ids=(1, 2)):
    return torch.from_numpy(np.stack([label == i for i in ids]))[None].float()


def oracle(labels, n_noise=4):
    return [proposals_from_labels(lab, n_noise=n_noise, rng=np.random.default_rng(t)) for t, lab in enumerate(labels)]


@pytest.fixture(autouse=True)
def seeded_single_thread(one_torch_thread):
    torch.manual_seed(0)


def test_shapes_and_dtypes_with_padding():
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke"))
    # Two videos: the second has one object (row 1 is padding) and a different number of proposals.
    batch_frames = torch.cat([to_tensor(frames[0]), to_tensor(frames[0])])
    one_object = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    masks = torch.cat([templates_of(labels[0]), torch.stack([templates_of(one_object)[0, 0], torch.zeros(H, W)])[None]])
    valid = torch.tensor([[True, True], [True, False]])
    state = model.init_state(batch_frames, masks, valid)
    assert state.template_features.shape == (2, 2, model.features.dim)
    assert torch.all(state.template_features[1, 1] == 0)
    step_frames = torch.cat([to_tensor(frames[1]), to_tensor(frames[1])])
    proposals = [proposals_from_labels(labels[1], n_noise=1), proposals_from_labels(labels[1], n_noise=4)]
    out, new_state = model.step(step_frames, proposals, state)
    m = 6  # the larger frame: 2 oracle + 4 noise
    assert out.logits.shape == (2, 2, H, W) and out.logits.dtype == torch.float32
    for name in ("cost", "cosine", "iou", "x_hat", "x_tilde"):
        assert getattr(out, name).shape == (2, 2, m), name
    assert out.matched_masks.shape == (2, 2, H, W)
    assert out.proposal_masks.shape == (2, m, H, W)
    assert out.proposal_valid.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert torch.all(out.cost[0, :, 3:] == PADDING_COST)
    assert torch.all(out.x_hat[1, 1] == 0) and not out.present[1, 1]
    assert torch.all(out.x_hat[0, :, 3:] == 0)  # padding columns are masked out of Alg. 1, not just expensive
    assert out.labels().shape == (2, H, W) and out.labels().dtype == torch.long
    assert new_state.frame_index == 1 and len(new_state.lstm) == 4


def test_cost_is_eq1_by_hand():
    gen = torch.Generator().manual_seed(1)
    n, m, d = 2, 3, 5
    tf, pf = torch.randn(1, n, d, generator=gen), torch.randn(1, m, d, generator=gen)
    prev = (torch.rand(1, n, 4, 4, generator=gen) > 0.5).float()
    props = (torch.rand(1, m, 4, 4, generator=gen) > 0.5).float()
    lam = 0.3
    terms = matching_cost(tf, pf, prev, props, lam=lam)
    for i in range(n):
        for j in range(m):
            a, b = tf[0, i].tolist(), pf[0, j].tolist()
            cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
            r, p = prev[0, i].bool(), props[0, j].bool()
            union = int((r | p).sum())
            iou = int((r & p).sum()) / union if union else 0.0
            assert terms.cosine[0, i, j].item() == pytest.approx(cos, abs=1e-6)
            assert terms.iou[0, i, j].item() == pytest.approx(iou, abs=1e-6)
            assert terms.cost[0, i, j].item() == pytest.approx((lam - 1) * cos - lam * iou, abs=1e-6)
    # Soft IoU: sum(ab) / (sum a + sum b - sum ab), and an empty pair gives 0, not NaN.
    a = torch.tensor([[[[0.5, 1.0], [0.0, 0.0]]]])
    b = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]).view(1, 2, 2, 2)
    assert soft_iou(a, b)[0, 0].tolist() == pytest.approx([1.0 / 2.0, 0.0])
    with pytest.raises(DMMInputError, match="lam"):
        matching_cost(tf, pf, prev, props, lam=1.5)


def test_eq8_matched_masks_equal_a_loop_over_proposals():
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", refine=False))
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    proposals = proposals_from_labels(labels[1], n_noise=3, rng=np.random.default_rng(5))
    out, _ = model.step(to_tensor(frames[1]), [proposals], state)
    pasted = proposals.paste(H, W)
    # P~: each proposal resized and pasted at image resolution
    torch.testing.assert_close(out.proposal_masks[0, : len(proposals)], pasted)
    for i in range(2):
        expected = torch.zeros(H, W)
        for j in range(len(proposals)):
            expected += out.x_tilde[0, i, j] * pasted[j]
        torch.testing.assert_close(out.matched_masks[0, i], expected, atol=1e-5, rtol=1e-5)
    # X~ keeps only each row's maximum of X^ (Sec. 4.1)
    kept = out.x_tilde[0] > 0
    assert kept.sum(dim=1).tolist() == [1, 1]
    assert torch.equal(out.x_tilde[0].argmax(1), out.x_hat[0].argmax(1))


def duplicated(proposals, copies):
    """Every proposal ``copies`` times (p1, p2, p1, p2, ...): a frame whose cost has tied columns."""
    return FrameProposals(proposals.boxes.repeat(copies, 1), proposals.scores.repeat(copies),
                          proposals.masks.repeat(copies, 1, 1), proposals.image_size)


def test_ambiguous_frame_keeps_the_tied_row_maxima_and_still_tracks():
    """Three identical copies of each object's proposal give three identical cost columns, so Alg. 1
    splits each row of X^ evenly over the copies and no entry reaches 0.5. X~ (Sec. 4.1) keeps the
    row maximum -- here all three tied copies -- and P^ = X~ (x) P~ (Eq. 8) is 3 x^ times the object's
    mask: the object is present and, without refinement, its label map is the ground truth."""
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False)).eval()
    proposals = duplicated(proposals_from_labels(labels[1]), 3)
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, _ = model.step(to_tensor(frames[1]), [proposals], state)
    x_hat, x_tilde = out.x_hat[0], out.x_tilde[0]
    row_max = x_hat.max(dim=1, keepdim=True).values
    assert (row_max < 0.5).all()  # the case a threshold at 0.5 would zero
    torch.testing.assert_close(x_tilde, x_hat * (x_hat == row_max), rtol=0, atol=0)
    assert (x_tilde > 0).tolist() == [[True, False] * 3, [False, True] * 3]  # object i keeps its 3 copies
    pasted = proposals.paste(H, W)
    for i in range(2):
        torch.testing.assert_close(out.matched_masks[0, i], 3 * row_max[i, 0] * pasted[i], rtol=1e-5, atol=1e-6)
    assert out.present[0].tolist() == [True, True]
    np.testing.assert_array_equal(out.labels()[0].numpy(), labels[1])


@pytest.mark.parametrize("matcher", ["dmm", "hungarian", "greedy"])
def test_iou_driven_model_tracks_oracle_proposals_perfectly(matcher):
    """lam = 0.99 makes Eq. 1 (almost) IoU only; with oracle + noise proposals and no
    refinement, every frame's matched proposal is the right object: the label output
    equals the ground truth exactly (rectangles paste back exactly) and J = 1 per object."""
    frames, labels = rectangles_video(T=5)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, matcher=matcher)).eval()
    proposals = oracle(labels)
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        for t in range(1, len(frames)):
            out, state = model.step(to_tensor(frames[t]), [proposals[t]], state)
            assert out.x_tilde[0].argmax(1).tolist() == [0, 1]  # oracle proposals come first, by id
            for i in (1, 2):
                truth = torch.from_numpy(labels[t] == i)
                matched = out.matched_masks[0, i - 1] / out.x_tilde[0, i - 1].max() > 0.5
                assert (matched & truth).sum() == (matched | truth).sum()  # J == 1
            np.testing.assert_array_equal(out.labels()[0].numpy(), labels[t])


def test_the_perfect_tracking_check_can_fail():
    """The same check fails when the proposals are off: jittered oracle boxes (a detector
    that is slightly wrong) paste back masks that differ from the ground truth."""
    frames, labels = rectangles_video(T=3)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False)).eval()
    rng = np.random.default_rng(0)
    proposals = [proposals_from_labels(lab, jitter=0.3, rng=rng) for lab in labels]
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, state = model.step(to_tensor(frames[1]), [proposals[1]], state)
    assert not np.array_equal(out.labels()[0].numpy(), labels[1])


def test_gradients_reach_cost_and_backbone_through_the_matching_layer():
    frames, labels = rectangles_video(T=3)
    model = DMMNet(default_config("smoke", refine_mode="plain"))  # the paper's head: logits = head(P^, ...)
    proposals = oracle(labels)
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    out1, state = model.step(to_tensor(frames[1]), [proposals[1]], state)
    out2, state = model.step(to_tensor(frames[2]), [proposals[2]], state)
    target = templates_of(labels[2])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out2.logits, target)
    grad_cost2, grad_cost1, grad_xhat = torch.autograd.grad(loss, [out2.cost, out1.cost, out2.x_hat], retain_graph=True)
    assert grad_cost2.abs().sum() > 0  # logits -> refinement -> P^ -> X~ -> X^ -> C (Alg. 1)
    assert grad_xhat.abs().sum() > 0
    assert grad_cost1.abs().sum() > 0  # through time: r_hat (Eq. 1's IoU) and the ConvLSTM state
    # The part of d loss / d theta that passes through the cost (the cosine of Eq. 1):
    stem = model.features.stem[0].weight
    (through_cost,) = torch.autograd.grad(out2.cost, stem, grad_outputs=grad_cost2, retain_graph=True)
    assert through_cost.abs().sum() > 0
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.refinement.parameters())


def _pass_through_scores(refine_mode):
    """Track the smoke benchmark's first val video with an untrained model on jittered oracle proposals; per
    (frame, object) the J of the output masks and the J of the matched proposals M it started from."""
    from dmmlib.data import DavisDataset, ensure_synthetic
    from dmmlib.lessons.measure import ground_truth_proposals
    from dmmlib.tracking import TrackOptions, track_steps

    root = ensure_synthetic(profile="smoke", progress=False)
    sequence = DavisDataset(root, "val").sequence(DavisDataset(root, "val").names[0])
    source = ground_truth_proposals(root, "val", n_noise=6, jitter=0.25)(sequence.name)
    model = DMMNet(default_config("smoke", refine_mode=refine_mode)).eval()
    output_j, matched_j = [], []
    for step in track_steps(sequence.frame_paths, sequence.labels(0), model, source,
                            options=TrackOptions(progress=False, sequence=sequence.name)):
        if step.output is None:
            continue
        truth = torch.from_numpy(np.stack([sequence.labels(step.index) == i for i in step.object_ids]))
        out = step.output
        for mask_kind, store in ((out.logits[0] > 0, output_j), (out.matched_proposals[0] > 0.5, matched_j)):
            inter = (mask_kind & truth).flatten(1).sum(1).double()
            union = (mask_kind | truth).flatten(1).sum(1).double()
            store.extend(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist())
    return np.array(output_j), np.array(matched_j)


def test_untrained_pass_through_head_outputs_the_matched_proposals():
    """The pass-through refinement starts from the matching result: J of the output == J of the matched proposals."""
    output_j, matched_j = _pass_through_scores("pass-through")
    assert len(output_j) >= 6 and 0.3 < matched_j.mean() < 0.99  # jittered proposals: J well below 1
    np.testing.assert_allclose(output_j, matched_j, atol=1e-6)
    # the same check fails for the paper's plain head, whose untrained output is noise around its bias
    plain_output, plain_matched = _pass_through_scores("plain")
    assert np.abs(plain_output - plain_matched).max() > 0.1


def test_pass_through_head_starts_at_zero_and_learns():
    frames, labels = rectangles_video(T=3)
    model = DMMNet(default_config("smoke"))  # pass-through by default
    assert model.config.refine_mode == "pass-through"
    assert float(model.refinement.to_logit.weight.detach().abs().sum() + model.refinement.to_logit.bias.detach().abs().sum()) == 0.0
    proposals = oracle(labels)
    optimiser = torch.optim.Adam(model.refinement.parameters(), lr=1e-2)
    for _ in range(2):  # step 1 moves the zero last layer, step 2 then reaches the layers before it
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, state = model.step(to_tensor(frames[1]), [proposals[1]], state)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, templates_of(labels[1]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.refinement.parameters())
    assert float(model.refinement.to_logit.weight.detach().abs().sum()) > 0


def test_state_detach_cuts_the_graph():
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke"))
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    _, state = model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)
    assert state.previous_masks.requires_grad or state.lstm[0][0].requires_grad
    cut = state.detach()
    assert not cut.previous_masks.requires_grad and not cut.lstm[0][0].requires_grad


def test_object_that_leaves_and_returns():
    """Object 2 vanishes in frames 2-3: with "no proposal" columns it is unmatched there,
    its output is empty, and it is re-acquired in frame 4 from its kept IoU template."""
    frames, labels = rectangles_video(T=6, absent=(2, 3))
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, no_proposal_cost=-0.6)).eval()
    proposals = oracle(labels)
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        for t in range(1, 6):
            out, state = model.step(to_tensor(frames[t]), [proposals[t]], state)
            assert out.present[0].tolist() == [True, t not in (2, 3)]
            assert out.no_proposal[0].tolist() == [False] * (out.no_proposal.shape[1] - 2) + [True, True]  # one per object
            np.testing.assert_array_equal(out.labels()[0].numpy(), labels[t])
    # With the (untrained, pass-through) refinement and no proposal at all for a frame: both objects are
    # suppressed and the previous masks are kept, so the same frame shown again with its proposals is
    # matched as if the empty frame had not been there.
    model = DMMNet(default_config("smoke", lam=0.99, no_proposal_cost=-0.6)).eval()
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, state = model.step(to_tensor(frames[1]), [FrameProposals.empty((H, W))], state)
        assert out.present[0].tolist() == [False, False]
        assert torch.all(out.labels() == 0)
        torch.testing.assert_close(state.previous_masks, templates_of(labels[0]))
        out, state = model.step(to_tensor(frames[1]), [proposals[1]], state)
        assert out.present[0].tolist() == [True, True]
        np.testing.assert_array_equal(out.labels()[0].numpy(), labels[1])


def test_labels_from_logits():
    logits = torch.tensor([[[[2.0, -1.0, 0.5]], [[1.0, -2.0, 3.0]]]])  # [1, 2, 1, 3]
    assert labels_from_logits(logits).tolist() == [[[1, 0, 2]]]
    assert labels_from_logits(logits, torch.tensor([[True, False]])).tolist() == [[[1, 0, 1]]]
    # a logit of exactly 0 is probability 1/2: not more likely object than background
    assert labels_from_logits(torch.tensor([[[[0.0, 1e-3]]]])).tolist() == [[[0, 1]]]
    # one object; and none at all (a video whose objects are all padding): background everywhere
    assert labels_from_logits(torch.tensor([[[[-1.0, 2.0]]]])).tolist() == [[[0, 1]]]
    empty = labels_from_logits(torch.zeros(2, 0, 3, 4))
    assert empty.shape == (2, 3, 4) and empty.dtype == torch.long and not empty.any()
    assert labels_from_logits(torch.zeros(2, 0, 3, 4, device="meta")).device.type == "meta"  # on the logits' device


def test_convlstm_cell_equations():
    cell = ConvLSTMCell(2, 3, kernel_size=1)
    x = torch.randn(4, 2, 5, 5)
    h, c = cell(x, None)
    gates = cell.gates(torch.cat([x, torch.zeros(4, 3, 5, 5)], 1))
    i, f, o, g = gates.chunk(4, 1)
    c_expected = torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c, c_expected)
    torch.testing.assert_close(h, torch.sigmoid(o) * torch.tanh(c_expected))


def _head_by_hand(head, feature_maps, matched, templates, state):
    """Sec. 3's decoder written object by object: coarse to fine, each ConvLSTM reads the reduced backbone feature,
    the upsampled hidden state of the coarser level (bilinear, pixel centres), and P^_i and r_i resized to its scale
    (bilinear with antialiasing: they shrink); the finest hidden state gives the logit, upsampled to the frame."""
    import torch.nn.functional as F

    b, n, height, width = matched.shape
    logits, new_state = torch.zeros(b, n, height, width), []
    for video in range(b):
        for i in range(n):
            hidden, per_level = None, []
            for k, level in enumerate(("conv4", "conv3", "conv2")):
                fmap = feature_maps[level][video:video + 1]
                size = tuple(fmap.shape[-2:])
                both = torch.stack([matched[video, i], templates[video, i]])[None]
                parts = [head.reduce[level](fmap)]
                if hidden is not None:
                    parts.append(F.interpolate(hidden, size=size, mode="bilinear", align_corners=False))
                parts.append(F.interpolate(both, size=size, mode="bilinear", align_corners=False, antialias=True))
                previous = None if state is None else tuple(s[video * n + i:video * n + i + 1] for s in state[k])
                hidden, cell = head.cells[level](torch.cat(parts, dim=1), previous)
                per_level.append((hidden, cell))
            logit = F.interpolate(head.to_logit(hidden), size=(height, width), mode="bilinear", align_corners=False)
            logits[video, i] = logit[0, 0]
            new_state.append(per_level)
    stacked = [tuple(torch.cat([new_state[o][k][j] for o in range(b * n)]) for j in range(2)) for k in range(3)]
    return logits, stacked


def test_refinement_head_is_sec3s_decoder_by_hand():
    torch.manual_seed(0)
    head = RefinementHead(feature_channels=(3, 5, 7), width=4, levels=("conv2", "conv3", "conv4"))
    b, n, height, width = 2, 2, 32, 48
    feature_maps = {"conv2": torch.randn(b, 3, 8, 12), "conv3": torch.randn(b, 5, 4, 6), "conv4": torch.randn(b, 7, 2, 3)}
    matched, templates = torch.rand(b, n, height, width), (torch.rand(b, n, height, width) > 0.5).float()
    with torch.no_grad():
        logits, state = head(feature_maps, matched, templates, None)
        expected, expected_state = _head_by_hand(head, feature_maps, matched, templates, None)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
        # the next frame starts from this frame's state, level by level
        logits2, _ = head(feature_maps, matched.flip(-1), templates, state)
        expected2, _ = _head_by_hand(head, feature_maps, matched.flip(-1), templates, expected_state)
        torch.testing.assert_close(logits2, expected2, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logits2, head(feature_maps, matched.flip(-1), templates, None)[0])  # the state matters


def test_checkpoint_round_trip_and_errors(tmp_path):
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", pooling="mask", pool_levels=("conv4", "conv5"))).eval()
    assert model.features.dim == 256 + 512
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"epoch": 3})
    loaded, extra = load_checkpoint(path, return_extra=True)
    assert extra == {"epoch": 3} and loaded.config == model.config
    with torch.no_grad():
        outs = []
        for net in (model, loaded):
            state = net.init_state(to_tensor(frames[0]), templates_of(labels[0]))
            outs.append(net.step(to_tensor(frames[1]), [oracle(labels)[1]], state)[0].logits)
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(DMMInputError, match="already exists"):
        save_checkpoint(path, model)
    (tmp_path / "bad.pt").write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(DMMInputError, match="not a readable torch file"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(DMMInputError, match="not a DMM-Net checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(DMMInputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_backbone_weights_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    extractor = FeatureExtractor("resnet18", weights=tmp_path / "r18.pt")
    torch.testing.assert_close(extractor.stages["conv5"][1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(extractor.stem[1].running_var, reference.bn1.running_var)
    with pytest.raises(DMMInputError, match="do not fit a resnet50"):
        FeatureExtractor("resnet50", weights=tmp_path / "r18.pt")
    with pytest.raises(DMMInputError, match="does not exist"):
        FeatureExtractor("resnet18", weights=tmp_path / "nope.pt")
    with pytest.raises(DMMInputError, match="not supported"):
        FeatureExtractor("vgg16")


def _ramps(maps):
    """Maps whose cell x holds the value x: pixel u of the frame reads u / stride - 0.5 (bilinear, exact)."""
    return {level: torch.arange(fmap.shape[-1], dtype=torch.float32).expand_as(fmap).clone() for level, fmap in maps.items()}


def test_pooled_features_and_boxes():
    masks = torch.zeros(2, H, W)
    masks[0, 5:10, 7:20] = 1
    assert masks_to_boxes(masks).tolist() == [[7.0, 5.0, 20.0, 10.0], [0.0, 0.0, 0.0, 0.0]]
    masks[0, 20, 30] = 0.5  # a pixel at exactly 1/2 is not in the mask (> threshold)
    assert masks_to_boxes(masks)[0].tolist() == [7.0, 5.0, 20.0, 10.0]
    with FakeTensorMode():  # boxes are computed on the masks' device
        assert masks_to_boxes(torch.zeros(2, H, W, device="cuda")).device.type == "cuda"
    extractor = FeatureExtractor("resnet18")
    maps = extractor(torch.rand(1, 3, H, W))
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(64, 12, 16), (128, 6, 8), (256, 3, 4), (512, 2, 2)]
    rois = torch.tensor([[0.0, 7, 5, 20, 10], [0.0, 0, 0, 64, 48]])
    vectors = extractor.pool(maps, rois)
    assert vectors.shape == (2, extractor.dim) == (2, 960)
    # On a map that is a linear ramp in x, RoIAlign's bilinear samples are exact and symmetric
    # about the box centre, so the box average is the ramp at the centre: cell x holds x, cell
    # centres sit at pixel (x + 0.5) * stride, so pixel u reads u / stride - 0.5.
    ramps = _ramps(maps)
    box = torch.tensor([[0.0, 24, 8, 40, 40]])  # centre x = 32, inside every level's cell centres
    pooled = extractor.pool(ramps, box)[0].split(extractor.channels)
    for (level, _), values in zip(maps.items(), pooled):
        stride = {"conv2": 4, "conv3": 8, "conv4": 16, "conv5": 32}[level]
        expected = min(max(32 / stride - 0.5, 0.0), maps[level].shape[-1] - 1.0)
        if level != "conv5":  # conv5 has 2 cells: samples reach the clamped border
            torch.testing.assert_close(values, torch.full_like(values, expected))
    # Mask-weighted pooling of a mask filling the box equals the box average.
    masked = FeatureExtractor("resnet18", pooling="mask")
    masked.load_state_dict(extractor.state_dict())
    full = torch.zeros(1, H, W)
    full[0, 8:40, 24:40] = 1
    torch.testing.assert_close(masked.pool(maps, box, full), extractor.pool(maps, box), atol=1e-4, rtol=1e-4)


def test_mask_pooling_weighs_each_cell_by_the_masks_coverage():
    """pooling="mask": each RoIAlign cell's feature weighted by how much of the cell the mask covers. Box 1 is
    x 24..40 with a mask on its left half (x 24..32): the weighted mean position is about x = 28.1 (cells 0-2 of 7
    fully covered, cell 3 about half), not the box centre 32. Box 2's mask fills it: the plain box average."""
    extractor = FeatureExtractor("resnet18", pooling="mask")
    maps = _ramps(extractor(torch.rand(1, 3, H, W)))
    boxes = torch.tensor([[0.0, 24, 8, 40, 40], [0.0, 24, 8, 40, 40]])
    masks = torch.zeros(2, H, W)
    masks[0, 8:40, 24:32] = 1
    masks[1, 8:40, 24:40] = 1
    pooled = extractor.pool(maps, boxes, masks)
    for values, centre in zip(pooled, (28.1, 32.0)):
        for level, part in zip(maps, values.split(extractor.channels)):
            if level != "conv5":  # conv5 has 2 cells: samples reach the clamped border
                stride = {"conv2": 4, "conv3": 8, "conv4": 16}[level]
                torch.testing.assert_close(part, torch.full_like(part, centre / stride - 0.5), atol=0.1 / stride, rtol=0)


def _roi_align_average(maps, rois, pool_size=7):
    """The paper's pooling written with torchvision's RoIAlign (2 x 2 samples, aligned): [K, dim]."""
    return torch.cat([roi_align(fmap, rois.to(fmap.dtype), pool_size, 1.0 / stride, 2, aligned=True).mean(dim=(-1, -2))
                      for fmap, stride in zip(maps.values(), (4, 8, 16, 32))], dim=1)


def _awkward_rois(n_images: int, count: int, seed: int) -> torch.Tensor:
    """Boxes [count, 5] grouped by image: inside, across the border, more than a cell outside, zero and negative size."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, n_images, (count,), generator=g).sort().values.double()
    x1 = torch.rand(count, generator=g, dtype=torch.float64) * (W + 60) - 40
    y1 = torch.rand(count, generator=g, dtype=torch.float64) * (H + 60) - 40
    x2 = x1 + torch.rand(count, generator=g, dtype=torch.float64) * 50 - 5
    y2 = y1 + torch.rand(count, generator=g, dtype=torch.float64) * 40 - 5
    rois = torch.stack([images, x1, y1, x2, y2], dim=1)
    rois[0, 1:] = torch.tensor([-90.0, -80.0, -70.0, -60.0])   # wholly outside: every sample reads 0
    rois[1, 1:] = torch.tensor([10.0, 12.0, 10.0, 30.0])       # zero width
    rois[2, 1:] = torch.tensor([0.0, 0.0, W, H])               # the whole frame, samples up to the far edge
    # conv2 (12 x 16 cells): bins of 2 cells from -1.5, so sample points fall exactly on -1 and on row 12 (the
    # first that still reads the map, clamped, and the last: points beyond either read 0)
    rois[3, 1:] = torch.tensor([-4.0, -4.0, 52.0, 52.0])
    return rois


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_pooling_is_roi_align_averaged_forward_and_backward(seed):
    """The box average is computed as separable weights times the map (features.box_average_weights); it must be
    torchvision's RoIAlign followed by the mean, value and gradient, on awkward boxes, images in any order."""
    extractor = FeatureExtractor("resnet18")
    torch.manual_seed(seed)
    n_images = 3
    maps = {level: (fmap.detach() ** 2).double().requires_grad_() for level, fmap in extractor(torch.rand(n_images, 3, H, W)).items()}
    rois = _awkward_rois(n_images, 30, seed)
    expected = _roi_align_average(maps, rois)
    got = extractor.pool(maps, rois)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    direction = torch.randn_like(expected)
    expected_grad = torch.autograd.grad((expected * direction).sum(), list(maps.values()))
    got_grad = torch.autograd.grad((got * direction).sum(), list(maps.values()))
    for a, b in zip(got_grad, expected_grad):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    counts = torch.bincount(rois[:, 0].long(), minlength=n_images).tolist()
    torch.testing.assert_close(extractor.pool(maps, rois, counts=counts), expected, rtol=1e-12, atol=1e-12)
    movable = rois.clone().requires_grad_()  # no gradient flows through a box, as with roi_align
    assert torch.autograd.grad(extractor.pool(maps, movable).sum(), movable, allow_unused=True)[0] is None
    shuffled = torch.randperm(len(rois), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(extractor.pool(maps, rois[shuffled]), expected[shuffled], rtol=1e-12, atol=1e-12)
    for order in ([1, 0], [0, 2, 1]):  # two rois out of order; a later roi before one that is not the first
        picked = torch.stack([rois[rois[:, 0] == image][0] for image in order])
        torch.testing.assert_close(extractor.pool(maps, picked), _roi_align_average(maps, picked), rtol=1e-12, atol=1e-12)
    single = {level: fmap.float() for level, fmap in maps.items()}  # float32: the same to rounding
    torch.testing.assert_close(extractor.pool(single, rois.float()), expected.float(), rtol=1e-5, atol=1e-5)


def test_box_pooling_reads_the_counts_once_and_reorders_only_rois_out_of_order(monkeypatch):
    """pool's docstring: without counts they are read from the rois' batch indices, one read from the device."""
    extractor = FeatureExtractor("resnet18")
    maps = extractor(torch.rand(2, 3, H, W))
    rois = _awkward_rois(2, 6, 0).float()
    grouped = rois[torch.argsort(rois[:, 0], stable=True)]  # image 0's rois first, several per image
    expected = extractor.pool(maps, grouped)
    calls = {"bincount": 0, "argsort": 0}
    for name in calls:
        def counting(*args, _real=getattr(torch, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(torch, name, counting)
    extractor.pool(maps, grouped)
    assert calls == {"bincount": 1, "argsort": 0}  # grouped already: nothing to reorder
    reversed_order = extractor.pool(maps, grouped.flip(0))
    assert calls == {"bincount": 2, "argsort": 2}  # out of order: still one read, then sorted and put back
    torch.testing.assert_close(reversed_order, expected.flip(0))


def test_box_pooling_from_a_single_level():
    extractor = FeatureExtractor("resnet18", pool_levels=("conv3",))
    maps = extractor(torch.rand(2, 3, H, W))
    rois = _awkward_rois(2, 6, 0).float()
    pooled = extractor.pool(maps, rois)
    assert pooled.shape == (6, extractor.dim)
    expected = roi_align(maps["conv3"], rois, 7, 1.0 / 8, 2, aligned=True).mean(dim=(-1, -2))  # conv3: stride 8
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)


def test_box_pooling_rejects_counts_that_do_not_fit_the_rois():
    extractor = FeatureExtractor("resnet18")
    maps = extractor(torch.rand(2, 3, H, W))
    rois = _awkward_rois(2, 6, 0).float()
    with pytest.raises(DMMInputError, match=r"counts=\[2, 3\] must give the number of rois \(6\)"):
        extractor.pool(maps, rois, counts=[2, 3])
    with pytest.raises(DMMInputError, match="of each of the maps' 2 images"):
        extractor.pool(maps, rois, counts=[2, 2, 2])


def test_pooling_samples_two_points_per_cell_side_in_the_wider_dtype_on_the_maps_device():

    extractor = FeatureExtractor("resnet18")
    maps = {level: fmap ** 2 for level, fmap in extractor(torch.rand(1, 3, H, W)).items()}  # not linear
    rois = torch.tensor([[0.0, 3.3, 5.1, 29.7, 40.2]])
    expected = _roi_align_average(maps, rois)
    # Mask R-CNN's 2 x 2 samples; float32 sums in another order than roi_align's (the float64 test is exact)
    torch.testing.assert_close(extractor.pool(maps, rois), expected, rtol=2e-6, atol=1e-6)
    for pool_size in (5, 9):  # the bins follow pool_size
        other = FeatureExtractor("resnet18", pool_size=pool_size)
        torch.testing.assert_close(other.pool(maps, rois), _roi_align_average(maps, rois, pool_size), rtol=2e-6, atol=1e-6)
    wide = extractor.pool(maps, rois.double())
    assert wide.dtype == torch.float64  # box corners are not rounded to the maps' float32
    assert extractor.pool({level: fmap.double() for level, fmap in maps.items()}, rois).dtype == torch.float64
    torch.testing.assert_close(wide, expected.double(), rtol=1e-5, atol=1e-6)
    masked = FeatureExtractor("resnet18", pooling="mask")
    assert masked.pool(maps, rois.double(), torch.ones(1, H, W)).dtype == torch.float64
    wide_maps = {level: fmap.double() for level, fmap in maps.items()}  # float64 maps, float32 boxes
    assert masked.pool(wide_maps, rois, torch.ones(1, H, W)).dtype == torch.float64
    with FakeTensorMode():  # a fake CUDA device: every tensor the pooling makes must be on the maps' device
        on_gpu = {level: torch.empty(fmap.shape, device="cuda") for level, fmap in maps.items()}
        out = masked.pool(on_gpu, torch.zeros(1, 5, device="cuda"), torch.zeros(1, H, W, device="cuda"))
        assert out.device.type == "cuda"
        assert extractor.pool(on_gpu, torch.zeros(1, 5, device="cuda"), counts=[1]).device.type == "cuda"


def _masked_cost():
    """C [1, 3, 4]: row 2 is a padded template, column 3 a padded proposal; both are the cheapest if not masked.

    Greedy (cheapest entry first) and the Hungarian algorithm disagree on the valid 2 x 3 part.
    """
    cost = torch.tensor([[[-1.0, -0.9, 0.0, -5.0],
                          [-0.9, 0.5, 0.0, -5.0],
                          [-5.0, -5.0, -5.0, -5.0]]])
    return cost, torch.tensor([[True, True, False]]), torch.tensor([[True, True, True, False]])


@pytest.mark.parametrize("matcher, solve", [("hungarian", hungarian_match), ("greedy", greedy_match)])
def test_model_matches_with_the_configured_matcher_and_masks(matcher, solve):
    cost, template_valid, valid = _masked_cost()
    model = DMMNet(default_config("smoke", matcher=matcher, refine=False))
    x_hat, x_tilde = model._match(cost, template_valid, valid)
    expected = solve(cost, template_mask=template_valid, proposal_mask=valid)
    assert torch.equal(x_hat, expected) and torch.equal(x_tilde, expected)
    other = greedy_match if solve is hungarian_match else hungarian_match
    assert not torch.equal(expected, other(cost, template_mask=template_valid, proposal_mask=valid))
    assert expected[0, 2].sum() == 0 and expected[0, :, 3].sum() == 0  # the padding is never matched
    assert not torch.equal(expected, solve(cost))  # ... though unmasked, it would be


@pytest.mark.parametrize("variant, n_grad, n_proj, lr", [("paper", 7, 3, 0.3), ("release", 30, 4, 0.2)])
def test_model_runs_alg1_with_its_configured_settings(variant, n_grad, n_proj, lr):
    cost, template_valid, valid = _masked_cost()
    model = DMMNet(default_config("smoke", n_grad=n_grad, n_proj=n_proj, match_lr=lr, match_variant=variant,
                                  refine=False))
    x_hat, _ = model._match(cost, template_valid, valid)
    settings = dict(n_grad=n_grad, n_proj=n_proj, lr=lr, template_mask=template_valid, proposal_mask=valid,
                    variant=variant)
    assert torch.equal(x_hat, dmm_match(cost, **settings))
    # each setting matters on this cost, so a model that dropped one would not pass the line above
    for changed in ({"n_grad": None}, {"n_proj": None}, {"lr": 0.1}, {"proposal_mask": None},
                    {"template_mask": None}, {"variant": "release" if variant == "paper" else "paper"}):
        assert not torch.allclose(x_hat, dmm_match(cost, **(settings | changed)), atol=1e-6), changed


def test_release_style_threshold_keeps_entries_strictly_above_it():
    """X~ = X^ * 1[X^ > t] in train mode: an entry exactly at the threshold is dropped, as in the release."""
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, train_keep_threshold=0.5))
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    step = lambda: model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)[0]
    x_hat = step().x_hat.detach()
    threshold = float(x_hat[0, 0].sort().values[-2])  # the row's second largest entry, exactly
    model.config = dataclasses.replace(model.config, train_keep_threshold=threshold)
    out = step()
    assert torch.equal(out.x_hat, x_hat)
    expected = torch.where(x_hat > threshold, x_hat, torch.zeros_like(x_hat))
    assert torch.equal(out.x_tilde, expected)
    assert (out.x_tilde[0, 0] > 0).sum() == 1 and (x_hat[0, 0] == threshold).sum() == 1


def test_step_checks_the_frame_size_and_reports_its_stages_timings():
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke")).eval()
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    with pytest.raises(DMMInputError, match="frames must have shape"):
        model.step(to_tensor(frames[1])[..., :-2, :], [oracle(labels)[1]], state)
    timings = {}
    with torch.no_grad():
        out, _ = model.step(to_tensor(frames[1]), [oracle(labels)[1]], state, timings=timings)
    assert set(timings) == {"features", "cost", "matching", "refinement"}
    assert all(seconds > 0 for seconds in timings.values())
    assert out.timings == timings


def test_an_object_whose_matched_mass_is_below_min_match_fraction_is_absent():
    """min_match_fraction is a fraction of the frame's H x W pixels: at 0.07 (215 of 48 x 64 pixels), object 1,
    matched with a mass of about 160 (X~'s weight times its 12 x 16 pixels), is too small to count as present,
    and object 2 (about 280 of 16 x 20) is not. At 0, a matched mass of exactly 0 (a frame without proposals)
    is still absent: present means mass > the threshold."""
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, min_match_fraction=0.07)).eval()
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, _ = model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)
        mass = out.matched_masks[0].sum(dim=(-1, -2))
        assert mass[0] < 0.07 * H * W < mass[1]
        assert out.present[0].tolist() == [False, True]
        model.config = dataclasses.replace(model.config, min_match_fraction=0.0)
        out, _ = model.step(to_tensor(frames[1]), [FrameProposals.empty((H, W))], state)
        assert out.present[0].tolist() == [False, False]


@pytest.mark.parametrize("normalize_previous", [True, False])
def test_the_next_frames_previous_mask_is_the_matched_proposal_or_p_hat(normalize_previous):
    """The IoU term of the next frame's Eq. 1 compares proposals with M = P^ / sum_j X~_ij (the matched proposal,
    default) or, with normalize_previous=False, with P^ itself (Eq. 8, faded by X~'s weight)."""
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, normalize_previous=normalize_previous)).eval()
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        out, new_state = model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)
    assert out.present[0].all()
    expected = out.matched_proposals if normalize_previous else out.matched_masks
    assert torch.equal(new_state.previous_masks, expected)
    assert not torch.allclose(out.matched_proposals, out.matched_masks)  # X~'s weight is below 1 here


def test_an_absent_object_keeps_its_convlstm_state():
    """While an object is absent, the head's ConvLSTM state of that object is carried over unchanged."""
    frames, labels = rectangles_video(T=3)
    model = DMMNet(default_config("smoke", lam=0.99, no_proposal_cost=-0.6)).eval()
    with torch.no_grad():
        state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
        _, state = model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)
        before = [(h.clone(), c.clone()) for h, c in state.lstm]
        assert any(h.abs().sum() > 0 for h, _ in before)
        out, after = model.step(to_tensor(frames[2]), [FrameProposals.empty((H, W))], state)
    assert out.present[0].tolist() == [False, False]
    for (h0, c0), (h1, c1) in zip(before, after.lstm):
        assert torch.equal(h0, h1) and torch.equal(c0, c1)


def test_release_style_confidence_while_training():
    """train_keep_threshold=0.01 (the authors' release): in train mode X~ keeps every X^ > 0.01;
    in eval mode it is the row maximum of Sec. 4.1."""
    frames, labels = rectangles_video(T=2)
    model = DMMNet(default_config("smoke", refine=False, train_keep_threshold=0.01))
    state = model.init_state(to_tensor(frames[0]), templates_of(labels[0]))
    step = lambda: model.step(to_tensor(frames[1]), [oracle(labels)[1]], state)[0]
    out = step()
    torch.testing.assert_close(out.x_tilde, out.x_hat * (out.x_hat > 0.01))
    assert (out.x_tilde[0] > 0).sum() > 2
    model.eval()
    out = step()
    assert (out.x_tilde[0] > 0).sum(dim=1).tolist() == [1, 1]


def test_box_pooling_stays_in_float32_under_bf16_autocast():
    """As torchvision runs roi_align under autocast: bf16 maps, float32 boxes -> float32 vectors, close to float32's."""
    extractor = FeatureExtractor("resnet18")
    maps = extractor(torch.rand(1, 3, H, W))
    rois = torch.tensor([[0.0, 3.3, 5.1, 29.7, 40.2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = extractor.pool({level: fmap.bfloat16() for level, fmap in maps.items()}, rois, counts=[1])
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, extractor.pool(maps, rois), rtol=2e-2, atol=2e-2)


def test_a_burn_in_keeps_the_template_features_graph_and_builds_none_of_its_own():
    """UnrolledClip with burn_in=2 on a 4-frame clip: frames 1-2 run without gradient, frame 3 is scored.
    The loss still reaches f(r_i) (computed on frame 0, before the burn-in), and the carried matched
    mask and ConvLSTM state come out of the burn-in without a graph."""
    from dmmlib.train_config import TrainConfig
    from dmmlib.unrolled import UnrolledClip

    frames, labels = rectangles_video(T=4)
    model = DMMNet(default_config("smoke", refine_mode="plain"))
    captured = {}
    real_init, real_step = model.init_state, model.step

    def init_state(*args, **kwargs):
        state = real_init(*args, **kwargs)
        state.template_features.retain_grad()
        captured["templates"] = state.template_features
        return state

    def step(frame, proposals, state):
        captured.setdefault("carried_in", []).append((torch.is_grad_enabled(), state.previous_masks.requires_grad))
        return real_step(frame, proposals, state)

    model.init_state, model.step = init_state, step
    clip = torch.stack([to_tensor(f)[0] for f in frames])[None]  # [1, 4, 3, H, W]
    label_maps = torch.from_numpy(np.stack(labels)).long()[None]  # [1, 4, H, W]
    proposals = [[p] for p in oracle(labels)[1:]]
    loss, _ = UnrolledClip(model, TrainConfig(max_objects=2))(clip, label_maps, proposals, burn_in=2)
    loss.backward()
    assert captured["templates"].grad is not None and captured["templates"].grad.abs().sum() > 0
    # frames 1 and 2 ran without gradient; frame 3 with it, carrying a matched mask made without a graph
    assert captured["carried_in"] == [(False, False), (False, False), (True, False)]
