import pytest

from dmmlib.errors import DMMInputError
from dmmlib.profiles import PROFILES, active_profile, by_profile


def test_default_profile_is_cpu(monkeypatch):
    monkeypatch.delenv("DMM_PROFILE", raising=False)
    assert active_profile() == "cpu"


@pytest.mark.parametrize("name", PROFILES)
def test_known_profiles_are_accepted(monkeypatch, name):
    monkeypatch.setenv("DMM_PROFILE", name)
    assert active_profile() == name
    assert by_profile({"smoke": 1, "cpu": 2, "gpu": 3}) == {"smoke": 1, "cpu": 2, "gpu": 3}[name]


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DMM_PROFILE", "laptop")
    with pytest.raises(DMMInputError, match="DMM_PROFILE='laptop'.*smoke, cpu, gpu"):
        active_profile()


def test_settings_table_must_cover_every_profile():
    with pytest.raises(KeyError, match="gpu"):
        by_profile({"smoke": 1, "cpu": 2}, profile="smoke")
