"""Mutation testing of dmmlib's core: how many small planted bugs does the test suite catch?

    python tools/mutate.py                 # every core module (what `make mutate` runs)
    python tools/mutate.py matching losses # some of them
    python tools/mutate.py --list          # the modules and the test files that cover each
    python tools/mutate.py --survivors losses  # after writing tests: the last run's survivors again

For each core module, mutmut (https://github.com/boxed/mutmut) makes one mutant per small
change of the module's code (an operator, a comparison, a constant, an argument dropped, ...),
and runs, for each mutant, the tests of that module's test files that execute the mutated
function. A mutant is *killed* when a test fails (or times out). The kill rate is killed /
(mutants - listed equivalents); a mutant no test runs counts as a survivor.

Each module runs in its own folder ``.mutants/<module>/`` (git-ignored, made afresh each run):
a copy of ``dmmlib/``, of the module's test files and of ``pyproject.toml`` with a
``[tool.mutmut]`` section for that module. mutmut works in its ``mutants/`` subfolder, which
is first on ``sys.path`` (and on ``PYTHONPATH`` for subprocesses): the tests import the mutated
copy, never the working tree's ``dmmlib``. Torch runs one thread (``OMP_NUM_THREADS=1``).

Equivalent mutants (a change no test can see, because the program means the same thing) are
listed in DEVELOPING.md, section "Equivalent mutants", one line each:

    - `<module>.<function>`: `<the mutated line>` -- <why it is equivalent>

A listed line that no longer matches a surviving mutant is reported (the list stays honest).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutants"
DEVELOPING = ROOT / "DEVELOPING.md"
EQUIVALENT_HEADING = "## Equivalent mutants"
TARGET_RATE = 0.90


@dataclass(frozen=True)
class Target:
    """One module to mutate, the (fast) test files that cover it, and optionally which of its functions."""

    source: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # only these ("name", "Class.method"); () means the whole module
    keyword: str = ""  # a pytest -k expression choosing the tests (leaving out slow ones, subprocess ones)

    @property
    def module(self) -> str:
        return self.source.removesuffix(".py").replace("/", ".")

    def mutant_patterns(self) -> list[str]:
        """mutmut's names of the mutants of :attr:`functions` (glob patterns)."""
        patterns = []
        for function in self.functions:
            cls, _, name = function.rpartition(".")
            mangled = f"x\u01c1{cls}\u01c1{name}" if cls else f"x_{name}"
            patterns.append(f"{self.module}.{mangled}__mutmut_*")
        return patterns


# The core: the paper's DMM-Net, the metrics and the evaluation, training's resume path, file writing.
# Test files are the fast ones that check each module; command-line runs in a subprocess are left out.
# On 2 shared cores a mutant takes about 10 s, so the large modules are mutated in the functions
# that compute what the paper defines (the others check arguments or print); DEVELOPING.md,
# "Mutation testing", lists what was measured and when.
NO_CLI = "not cli"
RESUME = "(resum or checkpoint or existing_run) and not cli"  # training's resume path: the tests that save and restore
TARGETS: dict[str, Target] = {
    "losses": Target("dmmlib/losses.py", ("tests/test_losses.py",)),
    "matching": Target("dmmlib/matching.py", ("tests/test_matching.py",),
                       functions=("projection_weights", "paper_outer_iteration", "greedy_one_hot_start",
                                  "confident_assignment", "lp_objective")),
    "projections": Target("dmmlib/projections.py", ("tests/test_matching.py",),
                          functions=("Layout.zero_padding", "rows_sum_to_one", "columns_sum_at_most_one",
                                     "project_columns_literal_eq6", "dykstra_project", "violation_with_layout")),
    "cost": Target("dmmlib/cost.py", ("tests/test_cost.py", "tests/test_model.py", "tests/test_losses.py")),
    "metrics": Target("dmmlib/evaluation/metrics.py", ("tests/test_metrics.py",),
                      functions=("jaccard", "boundary_tolerance", "boundary_map", "_footprint", "f_measure_frame",
                                 "decay_bin_ids", "_nanmean", "db_statistics")),
    "davis": Target("dmmlib/evaluation/davis.py", ("tests/test_evaluation.py",),
                    functions=("global_table", "evaluate_sequence"), keyword=NO_CLI),
    "model": Target("dmmlib/model.py", ("tests/test_model.py",),
                    functions=("DMMNet._match", "DMMNet.step", "DMMNet._keep_absent_state", "labels_from_logits")),
    "checkpoints": Target("dmmlib/checkpoints.py", ("tests/test_training.py",),
                          functions=("capture_rng", "restore_rng", "save_training_checkpoint",
                                     "newest_training_checkpoint"), keyword=RESUME),
    "fileio": Target("dmmlib/fileio.py", ("tests/test_fileio.py",),
                     functions=("move_into_place", "SetAside.restore", "_staged_files", "_staged_folder",
                                "atomic_write_with")),
    "refinement": Target("dmmlib/refinement.py", ("tests/test_model.py",),
                         functions=("ConvLSTMCell.forward", "RefinementHead.forward")),
    "features": Target("dmmlib/features.py", ("tests/test_model.py",),
                       functions=("FeatureExtractor.pool", "box_average_weights", "_box_average", "masks_to_boxes")),
    "training": Target("dmmlib/training.py", ("tests/test_training.py",),
                       functions=("_restore", "_save", "_start_files", "_finish", "lr_factor", "_set_learning_rates"),
                       keyword=f"({RESUME}) or cosine"),
}

# Lines that raise an error, and the string lines that continue a message, are not mutated: a mutant
# there rewords a message ("XX...XX", upper case), which tests check by the words that matter
# (``match=``), not letter by letter. Whether an error is raised is decided by the condition above the
# raise, which is mutated.
DO_NOT_MUTATE = [r"^\s*raise \w+\(", r"^\s*(f|rf|r)?\"[^\"]*\"\)*( from None)?,?\s*$"]

KILLED = {"killed", "timeout", "segfault"}


def _pyproject_for(target: Target) -> str:
    """The project's pyproject.toml with a ``[tool.mutmut]`` section that mutates ``target`` only."""
    selection = [*target.tests, "-m", "not slow and not cuda and not browser"]
    if target.keyword:
        selection += ["-k", target.keyword]
    section = {
        "source_paths": ["dmmlib"],
        "only_mutate": [target.source],
        "do_not_mutate_patterns": DO_NOT_MUTATE,
        "pytest_add_cli_args_test_selection": selection,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in section.items()]
    return (ROOT / "pyproject.toml").read_text(encoding="utf-8") + "\n".join(lines) + "\n"


def prepare(name: str, target: Target) -> Path:
    """A fresh ``.mutants/<name>/`` holding dmmlib, the target's tests and its pyproject.toml."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "dmmlib", work / "dmmlib", ignore=ignore)
    (work / "tests").mkdir(parents=True)
    for test in ("tests/conftest.py", *target.tests):
        shutil.copy2(ROOT / test, work / test)
    (work / "pyproject.toml").write_text(_pyproject_for(target), encoding="utf-8")
    # mutmut's folder exists before Python starts: a PYTHONPATH entry that does not exist yet
    # would be cached as "nothing here", and the tests would import another dmmlib.
    (work / "mutants").mkdir()
    return work


def run_mutmut(work: Path, target: Target, max_children: int, names: list[str] | None = None) -> int:
    """``mutmut run`` in ``work`` (one torch thread; subprocesses import the mutated copy too), on the
    mutants ``names`` if given, else on all of :attr:`Target.functions`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DMM_PROFILE="smoke",
               PYTHONHASHSEED="0", PYTHONPATH=str(work / "mutants"), MPLBACKEND="Agg", TQDM_DISABLE="1")
    selection = names if names is not None else target.mutant_patterns()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *selection]
    return subprocess.run(command, cwd=work, env=env).returncode


def refresh_tests(work: Path, target: Target) -> bool:
    """Copy the working tree's current test files into ``work`` (mutmut copies them on into ``mutants/``).

    False when the target's configuration changed since the last run (a test file added to
    :data:`TARGETS`): mutmut would then mark every mutant unchecked, so the module needs a full run.
    """
    if (work / "pyproject.toml").read_text(encoding="utf-8") != _pyproject_for(target):
        return False
    for test in ("tests/conftest.py", *target.tests):
        shutil.copy2(ROOT / test, work / test)
    return True


@dataclass
class Survivor:
    name: str  # mutmut's key: dmmlib.<module>.x_<function>__mutmut_<k>
    status: str
    function: str  # <module>.<function> as listed in DEVELOPING.md, e.g. evaluation.metrics.jaccard
    diff: str
    mutated: str  # the changed line(s), stripped and joined by " / "


def function_of(key: str) -> str:
    """``dmmlib.matching.x_dmm_match__mutmut_3`` -> ``matching.dmm_match`` (methods: ``module.Class.method``)."""
    module, _, mangled = key.rpartition(".")
    mangled = mangled.rsplit("__mutmut_", 1)[0]
    function = mangled[2:] if mangled.startswith("x_") else ".".join(mangled.split("\u01c1")[1:])
    return f"{module.removeprefix('dmmlib.')}.{function}"


def _natural(key: str):
    head, _, number = key.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def collect(work: Path, target: Target) -> tuple[dict[str, str], list[Survivor]]:
    """Status of each mutant of ``target`` (its :attr:`~Target.functions` only, if given) and the
    survivors with their diffs, read from mutmut's files in ``work``."""
    meta = work / "mutants" / f"{target.source}.meta"
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    patterns = target.mutant_patterns()
    if patterns:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    here = os.getcwd()
    os.chdir(work)  # mutmut's helpers read its config and files from the current folder
    try:
        from mutmut.configuration import reset_config
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code

        reset_config()
        statuses = {key: status_by_exit_code[code] for key, code in codes.items()}
        survivors = []
        for key in sorted(statuses, key=_natural):
            if statuses[key] in KILLED:
                continue
            diff = get_diff_for_mutant(key, path=target.source)
            added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
            survivors.append(Survivor(key, statuses[key], function_of(key), diff, " / ".join(added)))
    finally:
        os.chdir(here)
    return statuses, survivors


EQUIVALENT_LINE = re.compile(r"^- `(?P<function>[^`]+)`: `(?P<mutated>.*)` -- (?P<reason>\S.*)$")


def listed_equivalents(text: str | None = None) -> list[tuple[str, str]]:
    """``(module.function, mutated line)`` of each equivalent mutant listed in DEVELOPING.md's section."""
    text = DEVELOPING.read_text(encoding="utf-8") if text is None else text
    if EQUIVALENT_HEADING not in text:
        return []
    section = text.split(EQUIVALENT_HEADING, 1)[1].split("\n## ", 1)[0]
    return [(m["function"], m["mutated"]) for m in map(EQUIVALENT_LINE.match, section.splitlines()) if m]


@dataclass
class ModuleResult:
    name: str
    mutants: int
    killed: int
    equivalent: list[Survivor]
    survived: list[Survivor]

    @property
    def counted(self) -> int:
        return self.mutants - len(self.equivalent)

    @property
    def rate(self) -> float:
        return self.killed / self.counted if self.counted else 1.0


def judge(name: str, statuses: dict[str, str], survivors: list[Survivor],
          equivalents: list[tuple[str, str]]) -> ModuleResult:
    """Split the survivors into listed equivalents and true survivors."""
    listed = set(equivalents)
    equivalent = [s for s in survivors if (s.function, s.mutated) in listed]
    survived = [s for s in survivors if (s.function, s.mutated) not in listed]
    killed = sum(status in KILLED for status in statuses.values())
    return ModuleResult(name, len(statuses), killed, equivalent, survived)


def print_survivors(result: ModuleResult) -> None:
    print(f"\n== {result.name}: {len(result.survived)} surviving mutant(s)")
    for s in result.survived:
        print(f"-- {s.name} ({s.status})\n   - `{s.function}`: `{s.mutated}` -- ")
        print("\n".join("   " + line for line in s.diff.splitlines()[2:]))


def print_table(results: list[ModuleResult]) -> float:
    """The kill rate per module and over all; returns the overall rate."""
    print(f"\nmutation testing, {datetime.date.today()} (killed / (mutants - listed equivalents)):")
    print(f"  {'module':12} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'rate':>7}")
    for r in results:
        print(f"  {r.name:12} {r.mutants:8d} {r.killed:7d} {len(r.equivalent):7d} {len(r.survived):9d} {r.rate:7.1%}")
    killed, counted = sum(r.killed for r in results), sum(r.counted for r in results)
    rate = killed / counted if counted else 1.0
    print(f"  {'all':12} {sum(r.mutants for r in results):8d} {killed:7d} "
          f"{sum(len(r.equivalent) for r in results):7d} {sum(len(r.survived) for r in results):9d} {rate:7.1%}"
          f"   (target {TARGET_RATE:.0%})")
    return rate


def stale_equivalents(results: list[ModuleResult], equivalents: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Listed equivalents of the modules just run that match no surviving mutant (the code changed)."""
    prefixes = tuple(TARGETS[r.name].module.removeprefix("dmmlib.") + "." for r in results)
    seen = {(s.function, s.mutated) for r in results for s in r.equivalent}
    return [e for e in equivalents if e[0].startswith(prefixes) and e not in seen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--report-only", action="store_true", help="report the last run's results again")
    parser.add_argument("--survivors", action="store_true",
                        help="run the last run's surviving mutants again, against the current test files")
    parser.add_argument("--list", action="store_true", help="list the modules and their test files")
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:12} {target.source:32} {' '.join(target.tests)}")
            print(f"{'':12} functions: {', '.join(target.functions) or 'all'}")
        return 0
    unknown = sorted(set(args.modules) - set(TARGETS))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; expected some of {', '.join(TARGETS)}")
    equivalents = listed_equivalents()
    results, failed = [], []
    for name in args.modules or list(TARGETS):
        target = TARGETS[name]
        work = WORK / name
        if (args.report_only or args.survivors) and not (work / "mutants").is_dir():
            print(f"error: no results for {name} in {work}; run without --report-only/--survivors", file=sys.stderr)
            failed.append(name)
            continue
        if args.survivors:
            if not refresh_tests(work, target):
                print(f"error: the test files of {name} changed since its last run; run it in full", file=sys.stderr)
                failed.append(name)
                continue
            names = [s.name for s in judge(name, *collect(work, target), equivalents).survived]
            if names and run_mutmut(work, target, args.max_children, names) != 0:
                failed.append(name)
                print(f"error: mutmut failed on {name} (see its output above)", file=sys.stderr)
                continue
        elif not args.report_only:
            work = prepare(name, target)
            if run_mutmut(work, target, args.max_children) != 0:
                failed.append(name)
                print(f"error: mutmut failed on {name} (see its output above)", file=sys.stderr)
                continue
        results.append(judge(name, *collect(work, target), equivalents))
    for result in results:
        print_survivors(result)
    stale = stale_equivalents(results, equivalents)
    for function, mutated in stale:
        print(f"stale: DEVELOPING.md lists `{function}`: `{mutated}` as equivalent, but no such mutant survived")
    rate = print_table(results)
    return 1 if failed or stale or rate < TARGET_RATE else 0


if __name__ == "__main__":
    sys.exit(main())
