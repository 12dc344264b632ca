"""``python -m dmmlib info``: versions, the active profile and the torch device."""

from __future__ import annotations

import argparse

from dmmlib.info import describe


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def main(args: argparse.Namespace) -> int:
    del args
    facts = describe()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0
