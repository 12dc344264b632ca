import numpy as np
import pytest
from PIL import Image

from dmmlib.data.masks import davis_palette, read_label_png, write_label_png
from dmmlib.errors import DMMInputError


def test_palette_round_trip(tmp_path):
    labels = np.zeros((7, 9), np.uint8)
    labels[1:3, 2:5] = 1
    labels[4:, :3] = 3
    labels[0, 0] = 255
    write_label_png(tmp_path / "00000.png", labels)
    with Image.open(tmp_path / "00000.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "00000.png"), labels)


def test_davis_palette_colours():
    palette = davis_palette()
    assert palette[3:6] == [128, 0, 0] and palette[6:9] == [0, 128, 0] and palette[9:12] == [128, 128, 0]


def test_rgb_annotation_is_a_clear_error(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "rgb.png")
    with pytest.raises(DMMInputError, match=r"rgb.png is a RGB image; expected an 8-bit palette"):
        read_label_png(tmp_path / "rgb.png")
    assert read_label_png(tmp_path / "rgb.png", allow_binary_rgb=True).max() == 1


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DMMInputError, match="bad.png is not a readable image"):
        read_label_png(tmp_path / "bad.png")
    with pytest.raises(DMMInputError, match="missing.png does not exist"):
        read_label_png(tmp_path / "missing.png")


def test_write_rejects_bad_labels(tmp_path):
    with pytest.raises(DMMInputError, match="2-D"):
        write_label_png(tmp_path / "x.png", np.zeros((2, 2, 3)))
    with pytest.raises(DMMInputError, match="0..255"):
        write_label_png(tmp_path / "x.png", np.full((2, 2), 300))
    assert not (tmp_path / "x.png").exists()


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from dmmlib.fileio import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o666 & ~umask
