"""``python -m dmmlib``: the command-line entry points.

Each command is a module of :mod:`dmmlib.commands`; this file only lists them.
A module named here provides ``configure(parser)`` to add its arguments and
``main(args) -> int`` to run. Modules are imported only when their command is
chosen, so ``--help`` stays fast and a missing optional dependency of one
command never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tqdm import tqdm

from dmmlib.errors import DMMInputError
from dmmlib.fileio import describe_os_error

# name -> (module, one-line help). Add a line here to add a command.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("dmmlib.commands.info", "print versions, the active profile and the torch device"),
    "track": ("dmmlib.commands.track", "track objects through a video from a first-frame mask"),
    "predict": ("dmmlib.commands.predict", "track a whole DAVIS, YouTube-VOS or SegTrack v2 split and write result PNGs"),
    "proposals": ("dmmlib.commands.proposals", "train the proposal network, compute and cache proposals, measure recall"),
    "evaluate": ("dmmlib.commands.evaluate", "score a results folder: DAVIS J/F, YouTube-VOS G, SegTrack v2 mIoU"),
    "data": ("dmmlib.commands.data", "generate the synthetic VOS benchmark (data synth)"),
    "train": ("dmmlib.commands.train", "train DMM-Net end to end through the matching layer"),
}


def _program_name() -> str:
    """`dmmlib` when started through the console script, `python -m dmmlib` otherwise (usage lines match what was typed)."""
    return "dmmlib" if Path(sys.argv[0]).stem == "dmmlib" else "python -m dmmlib"


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="DMM-Net, the book: the dmmlib command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.main(args) or 0)
    except DMMInputError as error:
        return _user_error(str(error))
    except UnicodeDecodeError as error:  # a text input that is not UTF-8, where no reader named the file
        return _user_error(f"an input file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8")
    except OSError as error:  # read-only folder, no space left, a folder where a file belongs ...
        return _user_error(describe_os_error(error))
    except FloatingPointError as error:  # training diverged: raised with a message that says what to change
        return _user_error(str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _user_error(message: str) -> int:
    """Print ``error: <message>`` on one line of stderr (no traceback) and give the exit status 2."""
    for bar in list(getattr(tqdm, "_instances", ())):  # a progress bar left open would share the line
        bar.close()
    print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)
    return 2
