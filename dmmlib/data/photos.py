"""Photographs for the synthetic benchmark, taken from scikit-image's bundled samples.

Only images whose files ship inside the ``skimage`` wheel are used, so the
generator never touches the network (several ``skimage.data`` images are
fetched with ``pooch`` on first use; none of those appear here). The test
suite loads every name below with sockets disabled.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import skimage.data

# Colour photographs: used for backgrounds and as object textures.
COLOUR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
# Greyscale textures: tinted with a random colour before use, which gives many
# distinct-looking object appearances from few files.
GREY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "clock", "page", "cell")

ALL_PHOTOS = COLOUR_PHOTOS + GREY_PHOTOS
MAX_SIDE = 512


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """Return the bundled photograph ``name`` as float32 RGB in [0, 1], shape ``[H, W, 3]``.

    Photographs larger than ``MAX_SIDE`` pixels are shrunk to it. Greyscale images are repeated over three channels. The result is cached and
    marked read-only, so callers must copy before modifying it.
    """
    if name not in ALL_PHOTOS:
        raise KeyError(f"unknown photo {name!r}; expected one of {', '.join(ALL_PHOTOS)}")
    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.float32) / 255.0
    scale = MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        # textures are cut at a few hundred pixels at most; a smaller source makes every resample cheaper
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    image.setflags(write=False)
    return image
