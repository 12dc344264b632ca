"""Run the book's long experiments ahead of the build: ``python -m dmmlib.lessons.run TARGET [--profile P]``.

Targets (each also runs what it rests on, and every unit that is already on disk is skipped):

* ``proposals`` -- chapter 6: the proposal net, its train and val caches, f_theta's trunk
  (:func:`dmmlib.lessons.book_models.prepare_proposals`);
* ``ch08`` -- chapter 8: the book's model, the head study, the plain-head ablation and the
  evaluations the chapter shows;
* ``table4`` -- chapter 9: every model of Table 4 (:func:`~dmmlib.lessons.book_models.train_unit`)
  and every row of every seed (:func:`~dmmlib.lessons.table4.evaluate_unit`);
* ``all`` -- the three, each unit once.

The runner calls exactly the functions the chapters call, with the same arguments, so it
fills the caches the notebooks then read (there is no second code path). Every unit is
idempotent and resumable: a training unit checkpoints every ``checkpoint_every`` steps and
continues from its last checkpoint; an evaluation is written at its end, in one piece. So a
killed run is simply started again. It prints one line per unit, with the units left and an
estimate of the time left (the mean seconds of the units computed so far in this run, times
the units left).

This is the one lessons module that parses arguments (``pyproject.toml``'s argparse contract
ignores ``dmmlib.lessons.run -> argparse`` by name): it is a command of the book, not of
``dmmlib``'s command line, which never imports ``dmmlib.lessons``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

from dmmlib.errors import DMMInputError
from dmmlib.lessons import book_models, head_study
from dmmlib.lessons import table4 as t4
from dmmlib.profiles import DRY_RUN_ENV_VAR, PROFILE_ENV_VAR, PROFILES, active_profile, dry_run

TARGETS = ("proposals", "ch08", "table4", "all")


@dataclass(frozen=True)
class Unit:
    """One cached piece of work: ``done()`` says whether its result is on disk, ``run()`` computes (or reads) it."""

    label: str
    done: Callable[[], bool]
    run: Callable[[], object]


def proposal_units(profile: str) -> list[Unit]:
    """Chapter 6: the proposal net, its caches and f_theta (one unit; it resumes inside)."""
    return [Unit("proposals (chapter 6)", lambda: book_models.proposals_prepared(profile),
                 lambda: book_models.prepare_proposals(profile, progress=True))]


def _train(kind: str, seed: int, profile: str) -> Unit:
    return Unit(f"train {kind}, seed {seed}", lambda: book_models.unit_trained(kind, seed, profile),
                lambda: book_models.train_unit(kind, seed, profile, progress=True))


def _evaluate(row: str, seed: int | None, profile: str) -> Unit:
    def done() -> bool:
        budget, settings = book_models.model_budget(profile), t4.table4_settings(profile)
        return t4.eval_path(row, seed, profile, budget, settings).is_file()

    return Unit(f"evaluate {row}" + ("" if seed is None else f", seed {seed}"), done,
                lambda: t4.evaluate_unit(row, seed, profile))


def ch08_units(profile: str) -> list[Unit]:
    """Chapter 8: the book's model, the head study, the ablation's model and both evaluations."""
    kind, seed = book_models.BOOK_MODEL
    return [*proposal_units(profile), _train(kind, seed, profile),
            Unit("head study (chapter 8)", lambda: head_study.head_study_done(profile),
                 lambda: head_study.head_study(profile)),
            _train("ft2-plain", seed, profile),
            _evaluate("ft-unroll2", seed, profile), _evaluate("ft-unroll2-plain", seed, profile)]


def table4_units(profile: str) -> list[Unit]:
    """Chapter 9: every (kind, seed) model of Table 4, then every row of every seed."""
    settings = t4.table4_settings(profile)
    units = [_train(kind, seed, profile) for kind, seed in t4.units_needed(settings=settings, profile=profile)]
    for row in t4.ROWS + t4.ABLATIONS:
        seeds = (None,) if t4.ROW_MODEL[row] is None else t4.row_seeds(row, settings)
        units += [_evaluate(row, seed, profile) for seed in seeds]
    return [*proposal_units(profile), *units]


def plan(target: str, profile: str) -> list[Unit]:
    """The units of ``target`` in the order they run, each once (``all``: chapters 6, 8, 9)."""
    if target not in TARGETS:
        raise DMMInputError(f"target {target!r} is not known; expected one of {', '.join(TARGETS)}")
    makers = {"proposals": [proposal_units], "ch08": [ch08_units], "table4": [table4_units],
              "all": [proposal_units, ch08_units, table4_units]}[target]
    units: dict[str, Unit] = {}
    for make in makers:
        for unit in make(profile):
            units.setdefault(unit.label, unit)
    return list(units.values())


def _eta(seconds: list[float], left: int) -> str:
    if not left:
        return "nothing left"
    if not seconds:
        return f"{left} left"
    mean = sum(seconds) / len(seconds)
    return f"{left} left, ~{mean * left / 60:.1f} min to go at {mean:.1f} s per unit so far"


def run_units(units: list[Unit], write: Callable[[str], None] = tqdm.write) -> dict:
    """Run ``units`` in order, skipping those already done; returns ``{"computed": [...], "cached": [...]}``.

    The first unit (the proposals every later unit rests on) runs before the others are asked
    whether they are done: their cache keys need its files.
    """
    computed, cached, seconds = [], [], []
    pending: set[str] | None = None
    with tqdm(total=len(units), desc="units", unit="unit") as bar:
        for index, unit in enumerate(units):
            if unit.done():
                cached.append(unit.label)
                status = "cached"
            else:
                started = time.perf_counter()
                unit.run()
                seconds.append(time.perf_counter() - started)
                computed.append(unit.label)
                status = f"{seconds[-1]:.1f} s"
            if pending is None:  # the proposals exist now: the rest can say whether they are done
                pending = {u.label for u in units[index + 1:] if not u.done()}
            pending.discard(unit.label)
            bar.update(1)
            bar.set_postfix_str(_eta(seconds, len(pending)))
            write(f"[{index + 1}/{len(units)}] {unit.label}: {status}; {_eta(seconds, len(pending))}")
    return {"computed": computed, "cached": cached}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dmmlib.lessons.run",
        description="Run the book's long experiments ahead of the build (resumable; finished units are skipped).")
    parser.add_argument("target", help=f"what to run: {', '.join(TARGETS)}")
    parser.add_argument("--profile", default=None,
                        help=f"{', '.join(PROFILES)} (default: ${PROFILE_ENV_VAR}, else cpu)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"the gpu profile's code at smoke sizes, in data/dry-run/ (as {DRY_RUN_ENV_VAR}=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = active_profile() if args.profile is None else args.profile
        if profile not in PROFILES:
            raise DMMInputError(f"--profile {profile!r} is not a known profile; expected one of {', '.join(PROFILES)}")
        if args.target not in TARGETS:
            raise DMMInputError(f"target {args.target!r} is not known; expected one of {', '.join(TARGETS)}")
        os.environ[PROFILE_ENV_VAR] = profile  # every lookup below (and any subprocess) agrees on the profile
        if args.dry_run:
            os.environ[DRY_RUN_ENV_VAR] = "1"
        if dry_run() and profile != "gpu":
            raise DMMInputError(f"a dry run ({DRY_RUN_ENV_VAR}=1) is of the gpu profile; got --profile {profile}")
        units = plan(args.target, profile)
        done = run_units(units)
    except DMMInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(f"{args.target} ({profile}{', dry run' if dry_run() else ''}): {len(units)} units, "
          f"{len(done['computed'])} computed, {len(done['cached'])} already done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
