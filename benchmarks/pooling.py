"""How fast is f_theta's box pooling? torchvision's RoIAlign + mean against dmmlib's separable weights.

The paper's pooling (Sec. 4.1) RoI-aligns each mask's box on the conv2..conv4 maps and
averages the pooled cells. ``FeatureExtractor.pool`` computes that average as separable
bilinear weights times the map (one matrix product per image, :func:`dmmlib.features.box_average_weights`).
This script times both, forward and forward + backward, side by side in one run, at the
shapes of one training frame (default: the cpu profile's batch of 4 clips at 96 x 176 with
55 boxes each, ResNet-18 maps), checks they give the same numbers, and prints the ratios.

    .venv/bin/python benchmarks/pooling.py [--batch 4] [--boxes 55] [--size 96 176] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.ops import roi_align

from dmmlib.features import SAMPLES, STRIDES, FeatureExtractor


def roi_align_average(maps: dict, rois: torch.Tensor, pool_size: int) -> torch.Tensor:
    """The reference: torchvision's RoIAlign on every level, then the spatial mean: [K, dim]."""
    return torch.cat([roi_align(fmap, rois, pool_size, 1.0 / STRIDES[level], SAMPLES, aligned=True).mean(dim=(-1, -2))
                      for level, fmap in maps.items()], dim=1)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="images (clips of a training batch)")
    parser.add_argument("--boxes", type=int, default=55, help="boxes per image (templates + proposals)")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 176], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = args.size
    extractor = FeatureExtractor("resnet18", pool_levels=("conv2", "conv3", "conv4"))
    with torch.no_grad():
        maps = {level: fmap.contiguous() for level, fmap in extractor(torch.rand(args.batch, 3, height, width)).items()}
    leaves = {level: fmap.clone().requires_grad_() for level, fmap in maps.items()}
    k = args.batch * args.boxes
    x1, y1 = torch.rand(k) * width * 0.8, torch.rand(k) * height * 0.8
    boxes = torch.stack([x1, y1, x1 + 4 + torch.rand(k) * width / 3, y1 + 4 + torch.rand(k) * height / 3], dim=1)
    rois = torch.cat([torch.arange(args.batch).repeat_interleave(args.boxes)[:, None].float(), boxes], dim=1)
    counts = [args.boxes] * args.batch

    reference = roi_align_average(maps, rois, extractor.pool_size)
    ours = extractor.pool(maps, rois, counts=counts)
    difference = float((ours - reference).abs().max() / reference.abs().max())
    print(f"{args.batch} images of {height} x {width}, {args.boxes} boxes each, levels conv2-conv4, "
          f"{args.threads} thread(s); largest relative difference {difference:.1e}")
    assert difference < 1e-5, "the two poolings disagree"

    def backward(pool):
        def run():
            out = pool(leaves)
            out.backward(torch.ones_like(out))
        return run

    rows = [("forward", lambda: roi_align_average(maps, rois, extractor.pool_size),
             lambda: extractor.pool(maps, rois, counts=counts)),
            ("forward + backward", backward(lambda m: roi_align_average(m, rois, extractor.pool_size)),
             backward(lambda m: extractor.pool(m, rois, counts=counts)))]
    print(f"{'':<20}{'roi_align + mean':>18}{'separable':>12}{'speed-up':>10}")
    for name, reference_fn, ours_fn in rows:
        a, b = timed(reference_fn, args.repeats), timed(ours_fn, args.repeats)
        print(f"{name:<20}{a * 1e3:>15.2f} ms{b * 1e3:>9.2f} ms{a / b:>9.1f}x")


if __name__ == "__main__":
    main()
