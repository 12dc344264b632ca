"""Every chapter runs in the gpu profile, on this CPU, as a dry run (DMM_PROFILE=gpu DMM_DRY_RUN=1).

The dry run caps every size of the gpu profile at the smoke profile's (dmmlib.profiles.by_profile)
and keeps everything else of it: the packaged gpu config, the R50-FPN proposal net started from
COCO's weights with fresh heads, conv5 in f_theta, DataLoader workers, the gpu build's per-cell
time limit, its cache folders (under data/dry-run/) and the resumable units. So the branches only a
gpu build takes run in CI, minutes instead of hours.

COCO's weights cannot be downloaded here: a randomly initialised 91-class R50-FPN Mask R-CNN, saved
under the file name torchvision looks for in a temporary $TORCH_HOME, stands in for them (the code
path is the same: load the 91-class heads, replace them by fresh class-agnostic ones).

The chapters run as two independent chains, each in its own data folder, so that ``make test``
(pytest-xdist, two workers) runs them side by side with the other tests: the matching lessons and the
real-benchmark commands (chapters 0-2, 5, 10: nothing of theirs reads another chapter's results), and
the model chain (3, 4, 6-9, 11: chapter 11 reads chapters 3, 4 and 9, chapters 7-9 read chapter 6's
proposal net and chapter 8's model), each chain in reading order. Every chapter is in exactly one.

Deselect with ``-m "not dry_run"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from dmmlib.lessons.settings import cell_timeout

ROOT = Path(__file__).resolve().parents[1]
COCO_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"  # torchvision's MaskRCNN_ResNet50_FPN_Weights.COCO_V1


def stand_in_coco_weights(torch_home: Path) -> None:
    """A random 91-class R50-FPN Mask R-CNN where torchvision's hub cache keeps COCO's weights."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(),
               folder / COCO_FILE)


CHAINS = {
    "lessons-and-benchmarks": ("00", "01", "02", "05", "10"),
    "model-and-table4": ("03", "04", "06", "07", "08", "09", "11"),
}


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def test_the_chains_hold_every_chapter_once():
    numbers = [p.name[:2] for p in chapters()]
    in_chains = [n for chain in CHAINS.values() for n in chain]
    assert sorted(in_chains) == numbers, "every chapter in exactly one dry-run chain"
    assert all(list(chain) == sorted(chain) for chain in CHAINS.values()), "each chain in reading order"


@pytest.mark.dry_run
@pytest.mark.slow
@pytest.mark.parametrize("chain", CHAINS)
def test_every_notebook_runs_as_a_gpu_dry_run(tmp_path, chain):
    stand_in_coco_weights(tmp_path / "torch")
    env = dict(os.environ, DMM_PROFILE="gpu", DMM_DRY_RUN="1", DMM_DATA_DIR=str(tmp_path / "data"),
               TORCH_HOME=str(tmp_path / "torch"),
               PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p))
    notebooks = [str(p) for p in chapters() if p.name[:2] in CHAINS[chain]]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *notebooks, "--nbval-lax", "-p", "no:cacheprovider", "-q",
         f"--nbval-cell-timeout={cell_timeout('gpu')}"],  # the gpu build's limit, as the book build sets it
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    if chain == "model-and-table4":
        assert (tmp_path / "data" / "dry-run" / "runs" / "book-models-gpu").is_dir()  # the gpu profile's own folders
    assert (tmp_path / "data" / "dry-run").is_dir()
    assert not (tmp_path / "data" / "runs").exists()  # ... and nothing outside the dry run's folder
