"""The shared safety mechanisms: names not paths, outputs apart from inputs, all-or-nothing writes,
text and image inputs checked, and every user error one line with exit status 2."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmmlib import cli, fileio
from dmmlib.commands import info as info_command
from dmmlib.data.images import image_size, open_image, read_frame
from dmmlib.errors import DMMInputError
from dmmlib.fileio import (
    SetAside,
    check_apart,
    check_destinations,
    describe_os_error,
    plain_name,
    read_json_file,
    read_text_file,
    staged_files,
    staged_folder,
)
from dmmlib.info import describe


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", ["val", "train-val", "bike packing", "a..b", "00000", "ü-seq"])
def test_plain_names_pass(name):
    assert plain_name(name, "--split") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../val", "a/b", "a\\b", "/abs", ".hidden", " val", "val\n", "a\x00b"])
def test_paths_are_not_names(name):
    with pytest.raises(DMMInputError, match=r"--split .* is not a plain name"):
        plain_name(name, "--split")


def test_check_apart_names_each_relation(tmp_path):
    frames = tmp_path / "video" / "frames"
    frames.mkdir(parents=True)
    for out, relation in ((frames, "is"), (frames / "labels", "lies inside"), (tmp_path / "video", "contains"),
                          (tmp_path / "video/frames/../frames", "is")):
        with pytest.raises(DMMInputError, match=f"--out {out} {relation} --frames {frames}"):
            check_apart(out, "--out", {"--frames": frames, "--mask": None})
    check_apart(tmp_path / "elsewhere", "--out", {"--frames": frames})  # apart: fine
    (tmp_path / "link").symlink_to(frames)
    with pytest.raises(DMMInputError, match="is --frames"):  # a link to an input is the input
        check_apart(tmp_path / "link", "--out", {"--frames": frames})


def test_check_destinations_before_anything_is_written(tmp_path):
    (tmp_path / "old.csv").write_text("x")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DMMInputError, match="is the same file as the table"):
        check_destinations({tmp_path / "a.json": "table", tmp_path / "x/../a.json": "JSON file"}, force=True)
    with pytest.raises(DMMInputError, match="already exists; refusing to overwrite it"):
        check_destinations({tmp_path / "old.csv": "table"}, force=False)
    with pytest.raises(DMMInputError, match="is a folder; expected the path of a file"):
        check_destinations({tmp_path / "folder.csv": "table"}, force=True)
    with pytest.raises(DMMInputError, match="old.csv is a file, not a folder"):
        check_destinations({tmp_path / "old.csv" / "inner.csv": "table"}, force=True)
    assert check_destinations({tmp_path / "old.csv": "table", tmp_path / "new/b.csv": "table"}, force=True)


def test_staged_files_write_all_or_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_files() as batch:
            batch.path(tmp_path / "keep.txt").write_text("new")
            batch.path(tmp_path / "sub/deeper/new.txt").write_text("new")
            raise RuntimeError("the third file fails")
    assert tree(tmp_path) == {"keep.txt": b"old"}  # no temporary file, no folder made for one

    with staged_files() as batch:
        batch.path(tmp_path / "keep.txt").write_text("new")
        batch.path(tmp_path / "sub/new.txt").write_text("new")
    assert tree(tmp_path) == {"keep.txt": b"new", "sub": None, "sub/new.txt": b"new"}


def test_a_failed_rename_puts_back_what_was_replaced(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).write_text(f"old {name}")
    real_rename = os.rename
    calls = []

    def rename(source, target):
        calls.append(target)
        if Path(target).name == "b" and Path(source).name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_rename(source, target)

    monkeypatch.setattr(fileio.os, "rename", rename)
    with pytest.raises(OSError):
        with staged_files() as batch:
            for name in ("a", "b"):
                batch.path(tmp_path / name).write_text(f"new {name}")
    assert tree(tmp_path) == {"a": b"old a", "b": b"old b"} and calls


def test_staged_folder_new_existing_and_failed(tmp_path):
    target = tmp_path / "out" / "video"
    with staged_folder(target) as staging:
        (staging / "00000.png").write_bytes(b"1")
    assert tree(tmp_path / "out") == {"video": None, "video/00000.png": b"1"}

    (target / "notes.txt").write_text("mine")
    (target / "Old").mkdir()
    with staged_folder(target, replace=("Old",)) as staging:
        (staging / "00000.png").write_bytes(b"2")
        (staging / "00001.png").write_bytes(b"2")
    assert tree(target) == {"00000.png": b"2", "00001.png": b"2", "notes.txt": b"mine"}

    before = tree(tmp_path)
    with pytest.raises(DMMInputError):
        with staged_folder(target) as staging:
            (staging / "00000.png").write_bytes(b"3")
            raise DMMInputError("frame 00001.jpg is not a readable image")
    assert tree(tmp_path) == before
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(tmp_path / "new" / "deep" / "video") as staging:
            (staging / "00000.png").write_bytes(b"3")
            raise KeyboardInterrupt
    assert tree(tmp_path) == before  # the folders made for it are gone too
    (tmp_path / "file").write_text("x")
    with pytest.raises(DMMInputError, match="is a file; expected a folder"):
        with staged_folder(tmp_path / "file"):
            pass


def test_set_aside_restores_or_discards(tmp_path):
    (tmp_path / "log").write_text("old")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/step_1.pt").write_text("old")
    aside = SetAside([tmp_path / "log", tmp_path / "checkpoints", tmp_path / "absent"])
    assert tree(tmp_path).keys() == {e for e in tree(tmp_path) if ".replaced-" in e}
    (tmp_path / "log").write_text("new")
    aside.restore()
    assert tree(tmp_path) == {"log": b"old", "checkpoints": None, "checkpoints/step_1.pt": b"old"}
    aside = SetAside([tmp_path / "log"])
    (tmp_path / "log").write_text("new")
    aside.discard()
    assert tree(tmp_path) == {"log": b"new", "checkpoints": None, "checkpoints/step_1.pt": b"old"}


def test_text_inputs_name_the_file(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfval-a\n")
    assert read_text_file(tmp_path / "bom.txt", "split file") == "val-a\n"
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DMMInputError, match=r"split file .*latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_text_file(tmp_path / "latin1.txt", "split file")
    with pytest.raises(DMMInputError, match="is a folder; expected a UTF-8 text file"):
        read_text_file(tmp_path, "split file")
    (tmp_path / "bad.json").write_text('{"a": 1,}')
    with pytest.raises(DMMInputError, match=r"meta file .*bad.json is not valid JSON \(.* line 1"):
        read_json_file(tmp_path / "bad.json", "meta file")


def test_describe_os_error_is_one_line_with_the_file():
    line = describe_os_error(OSError(errno.EROFS, "Read-only file system", "/data/out/x.csv"))
    assert line.startswith("cannot use /data/out/x.csv: the file system is read-only;") and "\n" not in line
    assert "no space" in describe_os_error(OSError(errno.ENOSPC, "No space left on device"))


def test_image_content_must_match_its_suffix(tmp_path):
    grey = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    Image.fromarray(grey).save(tmp_path / "jpeg.png", format="JPEG")
    Image.fromarray(grey).save(tmp_path / "png.jpg", format="PNG")
    Image.fromarray(grey).save(tmp_path / "ok.png")
    with pytest.raises(DMMInputError, match=r"frame .*jpeg.png holds JPEG data but its name ends in .png"):
        read_frame(tmp_path / "jpeg.png")
    with pytest.raises(DMMInputError, match=r"image .*png.jpg holds PNG data but its name ends in .jpg"):
        image_size(tmp_path / "png.jpg")
    with open_image(tmp_path / "ok.png") as image:
        assert image.size == (64, 48)
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(DMMInputError, match="cut.png is not a readable image"):
        read_frame(tmp_path / "cut.png")


@pytest.mark.parametrize("error, expected", [
    (OSError(errno.EROFS, "Read-only file system", "/x/y.csv"), "error: cannot use /x/y.csv: the file system is read-only"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/x/t.csv"),
     "error: cannot use /x/t.csv: it is a folder where a file was expected"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "error: an input file is not UTF-8 text"),
    (DMMInputError("two\nlines"), "error: two lines"),
])
def test_the_cli_turns_user_errors_into_one_line(error, expected, capsys, monkeypatch):
    def fail(args):
        raise error

    monkeypatch.setattr(info_command, "main", fail)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Traceback" not in err


def test_info_names_the_source_of_the_profile(monkeypatch):
    monkeypatch.delenv("DMM_PROFILE", raising=False)
    assert describe()["profile"].startswith("cpu (the default; set $DMM_PROFILE")
    monkeypatch.setenv("DMM_PROFILE", "smoke")
    assert describe()["profile"] == "smoke (from $DMM_PROFILE)"


def test_set_aside_twice_is_harmless_and_staging_happens_beside_the_target(tmp_path):
    (tmp_path / "log").write_text("old")
    aside = SetAside([tmp_path / "log"])
    aside.restore()
    aside.discard()  # nothing is set aside any more: nothing to delete
    aside.restore()
    assert tree(tmp_path) == {"log": b"old"}
    # the staging folder is a hidden sibling named after the output (a rename within one file system;
    # a leftover of a killed run says what it was)
    with fileio.staged_folder(tmp_path / "out") as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".out.partial-")
        (staging / "a.txt").write_text("a")
    assert tree(tmp_path / "out") == {"a.txt": b"a"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(DMMInputError, match=r"cannot write output folder .*file[/\\]out: .* is a file"):
        with fileio.staged_folder(tmp_path / "file" / "out"):
            pass


def test_atomic_write_with_hands_the_writer_a_temporary_sibling(tmp_path):
    seen = []

    def writer(path):
        seen.append(path)
        path.write_text("done")

    fileio.atomic_write_with(tmp_path / "sub" / "result.txt", writer)
    assert (tmp_path / "sub" / "result.txt").read_text() == "done"
    assert seen[0].parent == tmp_path / "sub" and seen[0] != tmp_path / "sub" / "result.txt"
    assert not seen[0].exists()


def test_cleanup_never_hides_the_error_that_stopped_the_writing(tmp_path):
    """The caller sees its own error, not one from cleaning up: a staged file or a staging folder that the
    failed writer already removed."""
    with pytest.raises(RuntimeError, match="the writer failed"):
        with staged_files() as batch:
            batch.path(tmp_path / "a.txt").write_text("a")
            batch.path(tmp_path / "b.txt").unlink()  # e.g. a writer that cleans up after itself
            raise RuntimeError("the writer failed")
    assert tree(tmp_path) == {}
    with pytest.raises(RuntimeError, match="the writer failed"):
        with fileio.staged_folder(tmp_path / "out") as staging:
            staging.rmdir()
            raise RuntimeError("the writer failed")
    assert tree(tmp_path) == {}


def test_exclusive_makes_a_second_holder_wait(tmp_path):
    """Two holders of the same lock file (flock is per open file, so a thread shows it as well as a process)."""
    import threading
    import time

    cache = tmp_path / "sub" / "cache"
    events = []

    def second():
        with fileio.exclusive(cache):
            events.append("second holds")

    with fileio.exclusive(cache):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        events.append("first releases")
    thread.join(5)
    assert events == ["first releases", "second holds"]
    assert (tmp_path / "sub" / ".cache.lock").is_file() and not cache.exists()  # the lock is a sibling file
