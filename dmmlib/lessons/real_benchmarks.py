"""Chapter 10, the real benchmarks: the paper's targets, and the commands that reproduce them.

* :data:`PAPER_TARGETS`, :data:`PAPER_TRAINING`, :data:`PAPER_DATASET_FACTS` -- the
  paper's figures (Tables 1-3) and settings (Sec. 4.1) the chapter compares against;
* :func:`real_dataset_status` -- which real datasets sit under ``data/``;
* :func:`pipeline_commands` -- the ``python -m dmmlib`` commands of each benchmark, in
  order (full size, or tiny enough to run in seconds on a format fixture);
* :func:`run_command` -- runs one and shows the tail of its output.

Prediction and scoring themselves are library code (:mod:`dmmlib.predict`,
:mod:`dmmlib.evaluation`); this module only orchestrates the commands for the chapter.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from dmmlib.cli import main as cli_main
from dmmlib.data.paths import data_dir
from dmmlib.errors import DMMInputError
from dmmlib.lessons.settings import REAL_BENCHMARKS
from dmmlib.predict import DATASETS
from dmmlib.profiles import by_profile

# ---------------------------------------------------------------------------- the chapter's tables and commands

# The paper's figures (Tables 1-3, DMM-Net rows) and training settings (Sec. 4.1): the reproduction's targets.
PAPER_TARGETS = [
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net+ (R101), no online learning",
     "J_S": 58.3, "J_U": 41.6, "F_S": 60.7, "F_U": 46.3, "G": 51.7, "FPS": "12 (Titan XP, 255x448)"},
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net+ (R101), online learning",
     "J_S": 60.3, "J_U": 50.6, "F_S": 63.5, "F_U": 57.4, "G": 58.0, "FPS": "-"},
    {"benchmark": "YouTube-VOS 2018 val", "where": "Table 1", "setting": "DMM-Net (R50), online learning",
     "J_S": 59.2, "J_U": 47.6, "F_S": 62.6, "F_U": 53.9, "G": 55.8, "FPS": "-"},
    {"benchmark": "DAVIS 2017 val", "where": "Table 2", "setting": "no online learning",
     "J_M": 68.1, "F_M": 73.3, "G": 70.7},
    {"benchmark": "SegTrack v2 (all 14 videos)", "where": "Table 3", "setting": "DAVIS-trained, no fine-tuning, no OL",
     "mIoU*": 76.8, "mIoU†": 76.7},
]

PAPER_TRAINING = [
    {"what": "proposal net", "paper (Sec. 4.1)": "Mask R-CNN X101-FPN, COCO, then COCO + YouTube-VOS: lr 0.02, "
     "batch 8, 200,000 iterations; ROI score threshold 0; short side <= 800; top-50 kept"},
    {"what": "matching features", "paper (Sec. 4.1)": "COCO Mask R-CNN R50-FPN backbone (DMM-Net+: R101 from RVOS); "
     "RoI pooling of conv2-5, averaged"},
    {"what": "YouTube-VOS training", "paper (Sec. 4.1)": "Adam, lr 1e-4 (pretrained) / 1e-3 (random), batch 24, "
     "10 epochs, random affine augmentation, 255x448, light refinement (4 ConvLSTMs)"},
    {"what": "DAVIS 2017 fine-tuning", "paper (Sec. 4.1)": "Adam, lr 1e-7, batch 1, 8 epochs, short side <= 480, "
     "U-Net refinement initialised from RGMP"},
    {"what": "matching", "paper (Sec. 4.1)": "N_grad 40, N_proj 5, alpha 0.1; lambda 0.3 (DAVIS, YouTube-VOS), "
     "0.9 (SegTrack v2); X~ = X^ * 1[X^ = row max]"},
    {"what": "online learning", "paper (Sec. 4.1)": "100 epochs on the first frame (proposal net and DMM-Net)"},
]

# Sizes the paper states (Sec. 4): the only counts we quote without the data at hand.
PAPER_DATASET_FACTS = [
    {"dataset": "YouTube-VOS 2018", "videos": "3,471 train / 474 val", "objects": "65 seen + 26 unseen categories in val",
     "frames": "annotated at 6 fps"},
    {"dataset": "DAVIS 2017", "videos": "60 train / 30 val", "objects": "2.30 / 1.97 per sequence",
     "frames": "about 70 per video (so about 2,100 in val)"},
    {"dataset": "SegTrack v2", "videos": "14", "objects": "24", "frames": "947 in all"},
]

#: The source checkout (the commands are shown relative to it).
REPOSITORY = Path(__file__).resolve().parents[2]

REAL_FOLDERS = {"davis": "DAVIS", "youtube-vos": "youtube-vos", "segtrack": "SegTrackv2"}


def chapter_settings(profile: str | None = None) -> dict:
    """The chapter's fixture and run sizes for ``profile`` (:data:`dmmlib.lessons.settings.REAL_BENCHMARKS`)."""
    return by_profile(REAL_BENCHMARKS, profile)


def real_dataset_status(data_root=None) -> dict[str, dict]:
    """Which real datasets sit under ``data/`` (or ``data_root``): ``{name: {"path", "present", "detail"}}``.

    A dataset counts as present when the file its loader starts from exists:
    ``DAVIS/ImageSets/2017/val.txt``, ``youtube-vos/train/meta.json``, ``SegTrackv2/GroundTruth/``.
    """
    base = Path(data_root) if data_root is not None else data_dir()
    checks = {"davis": "ImageSets/2017/val.txt", "youtube-vos": "train/meta.json", "segtrack": "GroundTruth"}
    status = {}
    for name, folder in REAL_FOLDERS.items():
        path = base / folder
        marker = path / checks[name]
        status[name] = {"path": path, "present": marker.exists(),
                        "detail": f"found {marker}" if marker.exists() else f"no {marker}"}
    return status


def pipeline_commands(dataset: str, root, work, tiny: dict | None = None, proposal_net=None,
                      davis_checkpoint=None, init_checkpoint=None) -> list[tuple[str, list[str]]]:
    """The commands that reproduce one benchmark, in order: ``[(step, argv after "python -m dmmlib")]``.

    ``root``: the dataset folder; ``work``: where checkpoints, caches and results go.
    ``tiny``: ``{"proposal_steps", "train_steps", "size": (H, W)}`` adds the overrides that
    make the same commands run in seconds on a fixture (the chapter runs them so);
    ``None`` gives the full-size commands (on several GPUs, :func:`shell_line` puts the
    training step under torchrun). ``proposal_net``: the proposal-net checkpoint that
    YouTube-VOS and SegTrack v2 use (``proposals train`` reads the DAVIS layout only; default
    ``<work>/proposal_net.pt``); ``davis_checkpoint``: the DAVIS-trained DMMNet that SegTrack
    v2 is run with, as in the paper; ``init_checkpoint``: the trained DMMNet that DAVIS
    fine-tunes (Sec. 4.1; default ``<work>/../youtube-vos/run/model.pt``, what the YouTube-VOS
    commands write). A fixture has no trained model to fine-tune: its tiny run trains from
    scratch, at the from-scratch learning rates.
    """
    root, work = str(root), Path(work)
    net = str(proposal_net if proposal_net is not None else work / "proposal_net.pt")
    small = tiny is not None
    train_set = []
    if small:
        height, width = tiny["size"]
        train_set = ["--set", "profile=smoke", "--set", f"frame_size=[{height},{width}]", "--set", "max_objects=2",
                     "--set", "clips_per_epoch=1", "--set", "batch_size=1", "--set", f"max_steps={tiny['train_steps']}",
                     "--set", "num_workers=0", "--set", "device=cpu", "--set", "model.backbone=resnet18",
                     "--set", "model.refine_width=8", "--set", "checkpoint_every=1"]
    steps = ["--steps", str(tiny["proposal_steps"])] if small else ["--profile", "gpu"]
    if dataset == "davis":
        cache = str(work / "proposals")
        start = work.parent / "youtube-vos" / "run" / "model.pt" if init_checkpoint is None else init_checkpoint
        fine_tune = (["--set", "init_checkpoint=null", "--set", "lr_pretrained=1e-4", "--set", "lr_random=1e-3"]
                     if small else ["--set", f"init_checkpoint={start}"])
        cmds = [("proposal net", ["proposals", "train", "--data", root, "--out", net, *steps]),
                ("proposals (train)", ["proposals", "compute", "--data", root, "--split", "train", "--checkpoint", net,
                                       "--cache", cache]),
                ("proposals (val)", ["proposals", "compute", "--data", root, "--split", "val", "--checkpoint", net,
                                     "--cache", cache]),
                ("proposal recall", ["proposals", "recall", "--data", root, "--split", "val", "--cache", cache]),
                ("train", ["train", "--config", "davis2017", "--data", root, "--out", str(work / "run"),
                           "--set", f"proposal_cache={cache}", *fine_tune, *train_set]),
                ("predict", ["predict", "--davis-root", root, "--split", "val", "--out", str(work / "results"),
                             "--checkpoint", str(work / "run/model.pt"), "--proposals-cache", cache]),
                ("evaluate", ["evaluate", "--davis-root", root, "--split", "val", "--results", str(work / "results")])]
    elif dataset == "youtube-vos":
        size = ["--size", "255", "448"] if not small else []
        # on a fixture: no ImageNet or COCO download; the proposal net of the DAVIS run proposes inside training
        extra = ["--set", "backbone_weights=null", "--set", f"proposal_weights={net}"] if small else []
        cmds = [("train", ["train", "--config", "youtube-vos", "--data", root,
                           "--out", str(work / "run"), *train_set, *extra]),
                ("predict (valid, for the server)", ["predict", "--dataset", "youtube-vos", "--root", root,
                                                     "--split", "valid", "--out", str(work / "valid"),
                                                     "--checkpoint", str(work / "run/model.pt"),
                                                     "--proposal-checkpoint", net, *size]),
                ("predict (held-out split)", ["predict", "--dataset", "youtube-vos", "--root", root,
                                              "--split", "train-val", "--out", str(work / "train-val"),
                                              "--checkpoint", str(work / "run/model.pt"),
                                              "--proposal-checkpoint", net, *size]),
                ("evaluate (held-out split)", ["evaluate", "--dataset", "youtube-vos", "--root", root,
                                               "--split", "train-val", "--results", str(work / "train-val")])]
    elif dataset == "segtrack":
        cmds = [("predict", ["predict", "--dataset", "segtrack", "--root", root, "--out", str(work / "results"),
                             "--checkpoint", str(davis_checkpoint), "--proposal-checkpoint", net,
                             "--lam", "0.9"]),
                ("evaluate", ["evaluate", "--dataset", "segtrack", "--root", root, "--results",
                              str(work / "results")])]
    else:
        raise DMMInputError(f"dataset={dataset!r}; expected one of {', '.join(DATASETS)}")
    return cmds


def shell_line(argv: list[str], gpus: int = 1) -> str:
    """``python -m dmmlib ...`` as one shell line; training on several GPUs goes through torchrun."""
    head = ["torchrun", f"--nproc_per_node={gpus}", "-m", "dmmlib"] if gpus > 1 and argv[0] == "train" \
        else ["python", "-m", "dmmlib"]
    repo = str(REPOSITORY) + "/"
    return " ".join(shlex.quote(a.replace(repo, "")) for a in head + argv)


def run_command(argv: list[str], in_process: bool = False, cwd=None, show_tail: int = 12) -> dict:
    """Run ``python -m dmmlib ARGV``; raise if its exit status is not 0.

    ``in_process``: through :func:`dmmlib.cli.main` in this interpreter (same parser, same
    code; saves the ~5 s start of a new Python with torch), else as a subprocess.
    Prints the command and the last ``show_tail`` lines of its output; returns
    ``{"argv", "seconds", "output"}``.
    """
    argv = [str(a) for a in argv]
    print("$", shell_line(argv))
    start = time.perf_counter()
    if in_process:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = cli_main(argv)
        output = buffer.getvalue()
    else:
        done = subprocess.run([sys.executable, "-m", "dmmlib", *argv], cwd=cwd, capture_output=True, text=True)
        code, output = done.returncode, done.stdout + done.stderr
    seconds = time.perf_counter() - start
    bar = re.compile(r"\d+%\|")  # tqdm progress bars
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip() and not bar.search(line)
             and "UserWarning" not in line and "warnings.warn" not in line]
    for line in lines[-show_tail:]:
        print("   ", line)
    if code != 0:
        raise RuntimeError(f"command failed with exit status {code}: {shell_line(argv)}\n{output[-3000:]}")
    return {"argv": argv, "seconds": seconds, "output": output}
