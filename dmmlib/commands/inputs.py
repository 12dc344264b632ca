"""What several commands read from their arguments: a model, proposal sources, a dataset root."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Callable

from dmmlib.checkpoints import load_checkpoint
from dmmlib.device import pick_device
from dmmlib.errors import DMMInputError
from dmmlib.model import DMMNet
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.net import ProposalNet
from dmmlib.proposals.sources import ProposalSource, cached_source, network_source


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--proposals-cache``, ``--proposal-checkpoint``, ``--size``, ``--device``, ``--amp``."""
    parser.add_argument("--checkpoint", help="DMMNet checkpoint (default: an untrained model)")
    parser.add_argument("--proposals-cache", help="folder of cached proposals (ProposalCache: <dir>/<video>/<frame>.pt)")
    parser.add_argument("--proposal-checkpoint", help="ProposalNet weights, for frames not in the cache "
                                                      "(default without a cache: an untrained net)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run the model at this size (e.g. 255 448)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, ...")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                        help="mixed precision: autocast the backbone and the refinement head (default: float32)")


def model_inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The files and folders of :func:`add_model_arguments`, by option: an output must lie apart from them."""
    return {"--checkpoint": args.checkpoint, "--proposals-cache": args.proposals_cache,
            "--proposal-checkpoint": args.proposal_checkpoint}


def load_model(checkpoint: str | None) -> DMMNet:
    """The DMMNet of ``--checkpoint``, or an untrained one (with a warning)."""
    if checkpoint:
        return load_checkpoint(checkpoint)
    warnings.warn("no --checkpoint: using an untrained DMMNet (results are not meaningful)", stacklevel=2)
    return DMMNet()


def open_cache(folder: str | None) -> ProposalCache | None:
    """The ``--proposals-cache`` folder as a ProposalCache (it must exist), or None."""
    if not folder:
        return None
    cache = ProposalCache(folder)
    if not cache.root.is_dir():
        raise DMMInputError(f"--proposals-cache {cache.root} is not a folder")
    return cache


def proposal_supply(cache_folder: str | None, proposal_checkpoint: str | None,
                    device: str = "auto") -> Callable[[str], ProposalSource]:
    """``video name -> proposal source``: the cache (network for missing frames), or the network alone.

    Without a cache and without ``--proposal-checkpoint`` the network is untrained (a warning says so).
    The network runs on ``device``, where the tracker puts the frames.
    """
    cache = open_cache(cache_folder)
    net = None
    if proposal_checkpoint or cache is None:
        if not proposal_checkpoint:
            warnings.warn("no --proposal-checkpoint: using an untrained ProposalNet (results are not meaningful)",
                          stacklevel=2)
        net = ProposalNet(weights=proposal_checkpoint or None).to(pick_device(device)).eval()
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
