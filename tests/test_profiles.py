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


# -- the dry run (DMM_DRY_RUN=1): the gpu profile's choices at smoke sizes ------------------------


def test_capped_keeps_choices_and_caps_sizes():
    from dmmlib.profiles import capped

    gpu = {"steps": 2000, "frame_size": [240, 432], "levels": ("conv2", "conv5"), "lr": 1e-4, "flag": True,
           "videos": None, "seeds": (0, 1, 2, 3, 4), "name": "resnet50", "gpu_only": 7, "nested": {"n": 50}}
    smoke = {"steps": 3, "frame_size": [32, 56], "levels": ("conv2",), "lr": 1e-3, "flag": False,
             "videos": 2, "seeds": (0,), "name": "resnet18", "nested": {"n": 5}}
    assert capped(gpu, smoke) == {"steps": 3, "frame_size": [32, 56], "levels": ("conv2", "conv5"), "lr": 1e-4,
                                  "flag": True, "videos": 2, "seeds": (0,), "name": "resnet50", "gpu_only": 7,
                                  "nested": {"n": 5}}
    assert capped(10, 400) == 10  # a cap, never a raise


def test_dry_run_caps_every_gpu_lookup_and_only_gpu(monkeypatch):
    from dmmlib.lessons.settings import BOOK_MODELS, TABLE4
    from dmmlib.proposals.train import train_config_for_profile

    monkeypatch.setenv("DMM_DRY_RUN", "1")
    budget, table4 = by_profile(BOOK_MODELS, "gpu"), by_profile(TABLE4, "gpu")
    assert budget["steps"] == BOOK_MODELS["smoke"]["steps"] and budget["frame_size"] == [32, 56]
    assert budget["levels"] == BOOK_MODELS["gpu"]["levels"]  # conv5: the gpu profile's R50 trunk
    assert table4["seeds"] == (0,) and table4["row_seeds"] == {"ft-unroll2-plain": (0,)}
    assert table4["val_videos"] == 2
    proposals = train_config_for_profile("gpu")
    assert (proposals.architecture, proposals.init_weights, proposals.optimizer) == ("resnet50_fpn", "coco", "sgd")
    assert proposals.steps == train_config_for_profile("smoke").steps
    assert by_profile(BOOK_MODELS, "cpu") == BOOK_MODELS["cpu"]  # only the gpu profile has a dry run
    monkeypatch.setenv("DMM_DRY_RUN", "0")
    assert by_profile(BOOK_MODELS, "gpu") == BOOK_MODELS["gpu"]


def test_dry_run_has_a_data_folder_of_its_own(monkeypatch, tmp_path):
    from dmmlib.data.paths import data_dir, runs_dir
    from dmmlib.profiles import smoke_sized

    monkeypatch.setenv("DMM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DMM_PROFILE", "gpu")
    monkeypatch.delenv("DMM_DRY_RUN", raising=False)
    assert data_dir() == tmp_path and not smoke_sized()
    monkeypatch.setenv("DMM_DRY_RUN", "1")
    assert data_dir() == tmp_path / "dry-run" and runs_dir() == tmp_path / "dry-run" / "runs" and smoke_sized()
    monkeypatch.setenv("DMM_DRY_RUN", "yes")
    with pytest.raises(DMMInputError, match="DMM_DRY_RUN='yes'"):
        data_dir()
