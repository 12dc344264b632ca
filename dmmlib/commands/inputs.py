"""What several commands read from their arguments: a model, proposal sources, a dataset root."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Callable

from dmmlib.checkpoints import default_model, default_model_dir, load_checkpoint
from dmmlib.device import pick_device
from dmmlib.errors import DMMInputError
from dmmlib.model import DMMNet
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.net import ProposalNet
from dmmlib.proposals.sources import ProposalSource, cached_source, network_source


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--untrained``, ``--proposals-cache``, ``--proposal-checkpoint``, ``--size``, ``--device``,
    ``--amp``."""
    parser.add_argument("--checkpoint", help="DMMNet checkpoint (default: the book's trained model, "
                                             "data/runs/default-model-<profile>/model.pt, when it exists)")
    parser.add_argument("--untrained", action="store_true",
                        help="run an untrained DMMNet (and, without proposals, an untrained ProposalNet): "
                             "plumbing checks only, the masks are not meaningful")
    parser.add_argument("--proposals-cache", help="folder of cached proposals (ProposalCache: <dir>/<video>/<frame>.pt)")
    parser.add_argument("--proposal-checkpoint", help="ProposalNet weights, for frames not in the cache "
                                                      "(default without a cache: the default model's proposal net)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run the model at this size (e.g. 255 448)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, ...")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                        help="mixed precision: autocast the backbone and the refinement head (default: float32)")


def model_inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The files and folders of :func:`add_model_arguments`, by option: an output must lie apart from them."""
    return {"--checkpoint": args.checkpoint, "--proposals-cache": args.proposals_cache,
            "--proposal-checkpoint": args.proposal_checkpoint}


def load_model(checkpoint: str | None, untrained: bool = False) -> DMMNet:
    """The DMMNet of ``--checkpoint``; else the published default model (saying which); else, with
    ``--untrained``, an untrained one (with a warning); else an error that says how to get a trained one."""
    if checkpoint and untrained:
        raise DMMInputError("--checkpoint and --untrained exclude each other; pass one of them")
    if checkpoint:
        return load_checkpoint(checkpoint)
    if untrained:
        warnings.warn("--untrained: using an untrained DMMNet (its masks are not meaningful)", stacklevel=2)
        return DMMNet()
    found = default_model()
    if found is None:
        raise DMMInputError(
            f"no --checkpoint given and no trained default model in {default_model_dir()}: build the book's "
            "chapter 8 (it trains and publishes one), or train one with `python -m dmmlib train --config cpu "
            "--out RUN` and pass --checkpoint RUN/model.pt, or pass --untrained to run an untrained model"
        )
    path, record = found
    print(f"model: {path} (trained by {record.get('trained_by', 'an unrecorded run')}); --checkpoint picks another")
    return load_checkpoint(path)


def _default_proposal_checkpoint(untrained: bool) -> str | None:
    """The default model's proposal net (saying which), or None (an untrained net) with ``--untrained``."""
    found = default_model()
    recorded = found[1].get("proposal_checkpoint") if found else None
    if recorded and Path(recorded).is_file():
        print(f"proposals: {recorded} (the default model's proposal net); --proposal-checkpoint picks another")
        return recorded
    if untrained:
        warnings.warn("--untrained and no --proposal-checkpoint: using an untrained ProposalNet "
                      "(results are not meaningful)", stacklevel=3)
        return None
    raise DMMInputError(
        "no --proposals-cache or --proposal-checkpoint given and the default model names no proposal net: "
        "pass trained proposals (`python -m dmmlib proposals train/compute`), or --untrained"
    )


def open_cache(folder: str | None) -> ProposalCache | None:
    """The ``--proposals-cache`` folder as a ProposalCache (it must exist), or None."""
    if not folder:
        return None
    cache = ProposalCache(folder)
    if not cache.root.is_dir():
        raise DMMInputError(f"--proposals-cache {cache.root} is not a folder")
    return cache


def proposal_supply(cache_folder: str | None, proposal_checkpoint: str | None,
                    device: str = "auto", untrained: bool = False) -> Callable[[str], ProposalSource]:
    """``video name -> proposal source``: the cache (network for missing frames), or the network alone.

    Without a cache and without ``--proposal-checkpoint`` the network is the default model's
    proposal net, or (``--untrained``) an untrained one (a warning says so).
    The network runs on ``device``, where the tracker puts the frames.
    """
    cache = open_cache(cache_folder)
    net = None
    if proposal_checkpoint or cache is None:
        weights = proposal_checkpoint or _default_proposal_checkpoint(untrained)
        net = ProposalNet(weights=weights).to(pick_device(device)).eval()
    if cache is None:
        source = network_source(net)
        return lambda name: source
    source = cached_source(cache, net)
    return lambda name: source


def root_flag(args: argparse.Namespace) -> str:
    """The option that named the dataset root: ``--davis-root`` or ``--root``."""
    return "--davis-root" if getattr(args, "davis_root", None) and not args.root else "--root"


def dataset_root(args: argparse.Namespace) -> Path:
    """The dataset root from ``--root`` (or ``--davis-root`` for DAVIS), checked."""
    if args.davis_root and args.root and args.davis_root != args.root:
        raise DMMInputError("--davis-root and --root name different folders; pass one of them")
    root = args.root or args.davis_root
    if root is None:
        raise DMMInputError(f"--root is required (the {args.dataset} dataset folder)")
    if args.dataset != "davis" and not Path(root).is_dir():  # DAVIS checks name the missing file themselves
        raise DMMInputError(f"{args.dataset} root {root} is not a folder")
    return Path(root)
