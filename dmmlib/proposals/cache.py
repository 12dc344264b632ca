"""The off-line proposal store (Sec. 3: proposal extraction "is performed off-line").

:class:`ProposalCache` keeps one file per frame, ``<root>/<sequence>/<frame name>.pt``,
written atomically; :func:`claim_cache` records which network filled a cache, so the
proposals of two networks are never mixed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_write_text, read_json_file
from dmmlib.proposals.frames import FrameProposals

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def frame_key(frame_id: int | str) -> str:
    """File stem for a frame: ints as ``%05d`` (the DAVIS frame names), strings as given."""
    if isinstance(frame_id, (int, np.integer)):
        if frame_id < 0:
            raise DMMInputError(f"frame_id must be >= 0; got {frame_id}")
        return f"{int(frame_id):05d}"
    key = str(frame_id)
    if not _SAFE_NAME.match(key) or key in (".", ".."):
        raise DMMInputError(f"frame_id {key!r} must be an int or a plain file name (letters, digits, _ . -)")
    return key


class ProposalCache:
    """Proposals stored off-line, one file per frame: ``root/<seq>/<frame_id>.pt`` (Sec. 3).

    ``frame_id`` is an int (written ``%05d``, like the DAVIS frame files) or a plain
    name. Files are written atomically, so a crashed or parallel writer never leaves
    a half file for :meth:`get` to read.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, seq: str, frame_id: int | str) -> Path:
        seq = str(seq)
        if not _SAFE_NAME.match(seq) or seq in (".", ".."):
            raise DMMInputError(f"sequence name {seq!r} must be a plain folder name (letters, digits, _ . -)")
        return self.root / seq / f"{frame_key(frame_id)}.pt"

    def has(self, seq: str, frame_id: int | str) -> bool:
        return self.path(seq, frame_id).is_file()

    def get(self, seq: str, frame_id: int | str) -> FrameProposals | None:
        """The cached proposals, or ``None`` if this frame has not been computed."""
        path = self.path(seq, frame_id)
        if not path.is_file():
            return None
        return FrameProposals.load(path)

    def put(self, seq: str, frame_id: int | str, proposals: FrameProposals) -> Path:
        """Store ``proposals`` (replacing an older file for the same frame); returns the path."""
        if not isinstance(proposals, FrameProposals):
            raise DMMInputError(f"ProposalCache.put expects FrameProposals; got {type(proposals).__name__}")
        path = self.path(seq, frame_id)
        proposals.save(path)
        return path

    def sequences(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def frames(self, seq: str) -> list[str]:
        folder = self.root / seq
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.pt") if not p.name.startswith("."))


SOURCE_FILE = "proposal_source.json"


def check_claim(cache: ProposalCache, source: dict) -> bool:
    """Whether ``cache`` is already claimed by ``source``; a cache of another (or an unrecorded) network is refused.

    ``source``: which network fills it, e.g. its architecture and weight digest. The proposals
    of two networks must never be mixed.
    """
    path = cache.root / SOURCE_FILE
    if path.is_file():
        recorded = read_json_file(path, "proposal cache record")
        if recorded != source:
            recorded = recorded if isinstance(recorded, dict) else {}
            raise DMMInputError(
                f"cache {cache.root} holds proposals of another network ({recorded.get('architecture')}, "
                f"weights {str(recorded.get('weights_sha1'))[:12]}); use a new --cache folder or delete this one"
            )
        return True
    if cache.sequences():
        raise DMMInputError(f"cache {cache.root} holds proposals of an unrecorded network (no {SOURCE_FILE}); use a new folder")
    return False


def claim_cache(cache: ProposalCache, source: dict) -> None:
    """Record in ``cache`` which network fills it (``source``), after :func:`check_claim`."""
    if not check_claim(cache, source):
        atomic_write_text(cache.root / SOURCE_FILE, json.dumps(source, indent=1))
