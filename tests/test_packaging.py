"""environment.yml (conda) and pyproject.toml (pip) must install the same things."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.update(extra)
    return {r.replace(" ", "") for r in requirements}


def _environment_pip_requirements() -> set[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml should have exactly one pip section"
    return {r.replace(" ", "") for r in pip_sections[0] if not r.startswith("-e")}


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    in_pyproject = _pyproject_requirements()
    in_environment = _environment_pip_requirements()
    assert in_environment == in_pyproject, (
        f"only in environment.yml: {sorted(in_environment - in_pyproject)}; "
        f"only in pyproject.toml: {sorted(in_pyproject - in_environment)}"
    )


def test_environment_yml_installs_the_project_itself():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_torch_is_pinned_once():
    # environment.yml mirrors pyproject.toml and is kept in step by the test above.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pinning = [f for f in tracked if f != "environment.yml" and (ROOT / f).is_file()
               and "torch==" in (ROOT / f).read_text(errors="ignore") and not f.startswith("tests/")]
    assert pinning == ["pyproject.toml"], pinning


def test_cli_help_lists_info():
    out = subprocess.run([sys.executable, "-m", "dmmlib", "--help"], capture_output=True, text=True, check=True).stdout
    assert "info" in out


def test_cli_info_prints_profile_and_device():
    out = subprocess.run([sys.executable, "-m", "dmmlib", "info"], capture_output=True, text=True, check=True).stdout
    assert "profile" in out and "device" in out and "torch" in out


def test_cli_reports_unknown_profile_without_traceback():
    import os

    env = {**os.environ, "DMM_PROFILE": "nope"}
    result = subprocess.run([sys.executable, "-m", "dmmlib", "info"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "DMM_PROFILE='nope'" in result.stderr


def test_the_wheel_carries_the_configs_and_the_static_figures(tmp_path):
    """A non-editable install must find the packaged configs and scripts (importlib.resources), not the checkout's."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "dmmlib", source / "dmmlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("dmmlib-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for config in ("smoke", "cpu", "gpu", "davis2017", "youtube-vos"):
        assert f"dmmlib/configs/{config}.yaml" in names, config
    for asset in ("explorer_kit.js", "explorer_host.js", "explorer_convergence.js", "explorer_stepper.js",
                  "explorer_gradient.js", "explorer.css", "slider.js", "slider.css"):
        assert f"dmmlib/lessons/static/{asset}" in names, asset
    probe = ("import dmmlib.train_config as t, dmmlib.lessons.viz as v; "
             "print(t.packaged_config('gpu')); print(len(v.static_asset('explorer_kit.js')) > 0); "
             "print(t.load_config(t.packaged_config('davis2017')).dataset)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout.split()
    assert out[0].startswith(str(tmp_path / "site")), out  # read from the installed wheel
    assert out[1:] == ["True", "davis"]
    entry_points = next((tmp_path / "site").glob("dmmlib-*.dist-info")) / "entry_points.txt"
    assert "dmmlib = dmmlib.cli:main" in entry_points.read_text()  # the `dmmlib` console script


def test_the_console_script_runs_the_cli():
    script = Path(sys.executable).with_name("dmmlib")
    if not script.exists():
        pytest.skip("dmmlib is not installed in this interpreter's environment (pip install -e . installs the script)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: dmmlib ") and "track" in out
