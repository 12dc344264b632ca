"""dmmlib: the library behind *DMM-Net, the book*.

A reproduction of Zeng, Liao et al., "DMM-Net: Differentiable Mask-Matching
Network for Video Object Segmentation", ICCV 2019. One module per idea:

* :mod:`dmmlib.profiles` -- the ``DMM_PROFILE`` switch (smoke / cpu / gpu)
* :mod:`dmmlib.matching` -- the differentiable matching layer (Alg. 1, Eq. 2-7)
* :mod:`dmmlib.metrics`  -- DAVIS J / F, YouTube-VOS G, SegTrack mIoU
* :mod:`dmmlib.data`     -- dataset loaders and the synthetic VOS benchmark

Submodules are imported on first use so ``import dmmlib`` stays cheap.
"""

__version__ = "0.1.0"

from dmmlib.errors import DMMInputError  # noqa: E402
from dmmlib.profiles import active_profile, by_profile  # noqa: E402

__all__ = ["DMMInputError", "active_profile", "by_profile", "__version__"]


def __getattr__(name: str):
    # dmmlib.track without importing torch at `import dmmlib` time
    if name == "track":
        from dmmlib.tracking import track

        return track
    raise AttributeError(f"module 'dmmlib' has no attribute {name!r}")
