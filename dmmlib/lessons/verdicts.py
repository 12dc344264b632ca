"""The report card's verdict rule: one rule, the same thresholds, for every paired comparison.

A comparison of two rows (``row - reference``, paired by seed and video,
:func:`dmmlib.lessons.stats.paired_difference`) has an interval. Its **outcome** is

* ``"alike"`` when the whole interval lies within ``+-MINIMAL_EFFECT``: any difference is
  smaller than the smallest one that matters (an equivalence test);
* else ``"better"`` when the interval lies above zero, ``"worse"`` when it lies below;
* else ``"inconclusive"``: the interval holds zero *and* reaches past the minimal effect, so the
  runs cannot tell "no difference" from "a difference that matters".

A paper claim states the outcome it expects (``better``, ``worse``, ``alike`` or ``not better``
= alike or worse). Its **verdict**: ``"reproduces"`` when the outcome is one it expects,
``"inconclusive"`` when the outcome is inconclusive, else ``"does not reproduce"``.
"""

from __future__ import annotations

import math

from dmmlib.lessons.stats import PairedEstimate

#: The smallest difference that matters, in J&F points (the paper's Table 4 differences between
#: its matchers and training set-ups are 0.0 to 1.7 J_M points). Below it, two rows perform alike.
MINIMAL_EFFECT = 1.0

OUTCOMES = ("better", "worse", "alike", "inconclusive")
EXPECTATIONS = {"better": ("better",), "worse": ("worse",), "alike": ("alike",), "not better": ("alike", "worse")}
VERDICTS = ("reproduces", "does not reproduce", "inconclusive")
# green: holds; red: does not; yellow: cannot tell; grey: not measured (verdicts, and the checks' results)
_GREEN, _RED, _YELLOW, _GREY = "#d9f2d9", "#f8d7d3", "#fff1c2", "#e8e8e8"
VERDICT_COLOURS = {"reproduces": _GREEN, "does not reproduce": _RED, "inconclusive": _YELLOW, "not checked": _GREY,
                   "met": _GREEN, "missed": _RED, "not resolved": _YELLOW, "no data": _GREY}


def outcome(estimate: PairedEstimate, minimal_effect: float = MINIMAL_EFFECT) -> str:
    """``"alike"``, ``"better"``, ``"worse"`` or ``"inconclusive"`` from the estimate's interval (module docstring)."""
    low, high = estimate.low, estimate.high
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if -minimal_effect < low and high < minimal_effect:
        return "alike"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inconclusive"


def point_outcome(difference: float, minimal_effect: float = MINIMAL_EFFECT) -> str:
    """The outcome a bare difference (no interval, e.g. the paper's own table) would get under the same rule."""
    return outcome(PairedEstimate(difference, 0.0, difference, difference, 1.0, 1, 1, 1), minimal_effect)


def verdict(result: str, expected: str) -> str:
    """``"reproduces"`` / ``"does not reproduce"`` / ``"inconclusive"`` for an outcome and a claim's expectation."""
    if expected not in EXPECTATIONS:
        raise ValueError(f"expected={expected!r}; expected one of {sorted(EXPECTATIONS)}")
    if result not in OUTCOMES:
        raise ValueError(f"result={result!r}; expected one of {OUTCOMES}")
    if result in EXPECTATIONS[expected]:
        return "reproduces"
    return "inconclusive" if result == "inconclusive" else "does not reproduce"


def styled_card(table, verdict_column: str = "verdict"):
    """``table`` (a DataFrame) as a Styler: verdicts colour-coded, long text wrapped, no index."""
    def colour(value):
        return f"background-color: {VERDICT_COLOURS.get(value, '#ffffff')}; font-weight: 600"

    return (table.style.hide(axis="index").map(colour, subset=[verdict_column])
            .set_properties(**{"white-space": "normal", "text-align": "left", "vertical-align": "top"})
            .set_table_styles([{"selector": "th", "props": "text-align: left"},
                               {"selector": "td", "props": "max-width: 22em; padding: 0.3em 0.6em"}]))
