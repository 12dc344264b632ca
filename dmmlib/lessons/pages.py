"""How a chapter presents what it ran at: small styled tables and generated sentences, never dicts.

A chapter's first cell used to ``print`` its settings dict; a reader saw
``profile cpu: {'coin_examples': 40, ...}``. ``sizes_table`` shows the same numbers as a table
with the name of the settings table they come from, so a reader who wants other sizes knows
where to look (``dmmlib.lessons.settings``). ``dmmlib.lessons.check_html`` keeps printed dicts
out of the built book.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " × ".join(map(str, value)) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def sizes_table(profile: str, settings: Mapping[str, Any], source: str):
    """A two-column table (setting, value) of ``settings``, captioned with the profile and ``source``.

    ``source`` names where the sizes live, e.g. ``"settings.MATCHING_CHAPTERS"``. Returns a pandas
    ``Styler``: a notebook shows it as an HTML table.
    """
    frame = pd.DataFrame({"value": [_plain(v) for v in settings.values()]},
                         index=pd.Index([k.replace("_", " ") for k in settings], name="setting"))
    caption = f"Sizes in the {profile} profile (dmmlib.lessons.{source})"
    return frame.style.set_caption(caption).set_table_styles(
        [{"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.9em;"}])
