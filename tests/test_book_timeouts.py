"""The book build's per-cell time limit follows the profile (tools/book_timeouts.py, a Sphinx extension)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dmmlib.errors import DMMInputError
from dmmlib.lessons.settings import CELL_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]


def load_extension():
    spec = importlib.util.spec_from_file_location("book_timeouts", ROOT / "tools" / "book_timeouts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_each_profile_gets_its_own_cell_limit(monkeypatch, profile):
    extension = load_extension()
    monkeypatch.setenv("DMM_PROFILE", profile)
    monkeypatch.delenv("DMM_CELL_TIMEOUT", raising=False)
    monkeypatch.setenv("DMM_DRY_RUN", "1" if profile == "gpu" else "0")  # a dry run keeps the gpu limit
    config = SimpleNamespace(nb_execution_timeout=1800)
    extension._set_timeout(None, config)
    assert config.nb_execution_timeout == CELL_TIMEOUT_S[profile]
    assert CELL_TIMEOUT_S["gpu"] >= 12 * 3600 > CELL_TIMEOUT_S["cpu"]  # gpu cells may train for hours


def test_the_limit_can_be_set_for_one_build_and_is_checked(monkeypatch):
    extension = load_extension()
    monkeypatch.setenv("DMM_CELL_TIMEOUT", "7200")
    assert extension.build_timeout() == 7200
    monkeypatch.setenv("DMM_CELL_TIMEOUT", "two hours")
    with pytest.raises(DMMInputError, match="DMM_CELL_TIMEOUT='two hours'"):
        extension.build_timeout()


def test_the_book_loads_the_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"]["book_timeouts"] == "tools/"
