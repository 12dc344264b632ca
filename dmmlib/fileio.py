"""Safe file input and output shared by every reader and writer in ``dmmlib``: nothing a user owns is lost.

* single files are written atomically: data go to a temporary file in the destination
  folder, renamed over the target in one step (``os.replace`` is atomic on POSIX and
  Windows) -- :func:`atomic_path`, :func:`atomic_write_text`, :func:`atomic_write_with`;
* several files, or a folder, are written all or nothing: every destination is checked
  before the first byte is written (:func:`check_destinations`), the files are staged
  beside their targets and renamed into place at the end; a failed run leaves the output
  as it was -- :func:`staged_files`, :func:`staged_folder`, :func:`move_into_place`;
* nothing existing is replaced without ``--force`` (:func:`refuse_overwrite`), an output
  never lands among the inputs (:func:`check_apart`), and a name taken from the user is a
  name, not a path (:func:`plain_name`);
* text inputs are read with errors that name the file (:func:`read_text_file`,
  :func:`read_json_file`), and an ``OSError`` is told in one line (:func:`describe_os_error`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from dmmlib.errors import DMMInputError, existing_file

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- names and places


def plain_name(value, what: str) -> str:
    """``value`` as a string if it is a plain name (one file or folder name), else a :class:`DMMInputError`.

    Split, sequence, video and resolution names become parts of paths; a separator, ``..``
    or a leading dot would let them point elsewhere (or at a hidden entry), so they are refused.
    """
    text = str(value)
    if (not text or text.startswith(".") or "/" in text or "\\" in text or text != text.strip()
            or any(ord(c) < 32 for c in text)):
        raise DMMInputError(f"{what} {text!r} is not a plain name; expected a name without '/', '\\', "
                            "a leading '.' or surrounding spaces (it names a file or folder, it is not a path)")
    return text


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_apart(output: PathLike, what: str, inputs: Mapping[str, PathLike | None]) -> None:
    """Refuse an ``output`` (file or folder) that is, lies inside, or contains one of ``inputs``.

    ``inputs`` maps an argument name (``"--frames"``) to its path (``None``: not given).
    Symbolic links are resolved, so a link to an input counts as the input.
    """
    out = _resolved(output)
    for name, value in inputs.items():
        if value is None or str(value) == "":
            continue
        given = _resolved(value)
        if out == given:
            relation = "is"
        elif given in out.parents:
            relation = "lies inside"
        elif out in given.parents:
            relation = "contains"
        else:
            continue
        raise DMMInputError(f"{what} {output} {relation} {name} {value}; outputs never go among the inputs, "
                            f"so that no input is overwritten: choose a {what} outside it")


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: PathLike, what: str) -> None:
    """Raise unless ``folder`` is (or can be created as) a writable folder; ``what`` names the output in errors."""
    folder = Path(folder)
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise DMMInputError(f"cannot write {what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DMMInputError(f"cannot write {what}: folder {existing} is not writable (read-only file system or "
                            "no permission); choose another location")


def make_folders(folder: PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders created, outermost first."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise DMMInputError(f"{probe} is a file; expected a folder (it is on the path of {folder})")
    created = []
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        created.append(path)
    return created


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (innermost last given first) that is empty: undo :func:`make_folders`."""
    for folder in reversed(list(folders)):
        with contextlib.suppress(OSError):
            folder.rmdir()


# ----------------------------------------------------------------------------- destinations


def refuse_overwrite(path: PathLike, force: bool, what: str = "file", flag: str = "--force") -> None:
    """Raise :class:`DMMInputError` if ``path`` exists and ``force`` is false."""
    if not force and os.path.lexists(path):
        raise DMMInputError(f"{what} {path} already exists; refusing to overwrite it (pass {flag} to replace it)")


def check_destination(path: PathLike, force: bool, what: str = "file", flag: str = "--force") -> Path:
    """Check one output file before anything is written: not a folder, new unless ``force``, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise DMMInputError(f"{what} {path} is a folder; expected the path of a file to write")
    refuse_overwrite(path, force, what, flag)
    check_writable_folder(path.parent, f"{what} {path}")
    return path


def check_destinations(destinations: Mapping[PathLike, str], force: bool, flag: str = "--force") -> list[Path]:
    """:func:`check_destination` for every ``{path: what}``, and no two of them the same file."""
    seen: dict[Path, str] = {}
    checked = []
    for path, what in destinations.items():
        key = _resolved(path)
        if key in seen:
            raise DMMInputError(f"{what} {path} is the same file as the {seen[key]}; "
                                "each output needs its own file")
        seen[key] = f"{what} {path}"
        checked.append(check_destination(path, force, what, flag))
    return checked


# ----------------------------------------------------------------------------- all or nothing


def _aside_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.replaced-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class SetAside:
    """Existing entries moved out of the way (renamed to hidden siblings) until :meth:`discard` or :meth:`restore`."""

    def __init__(self, paths: Iterable[PathLike]):
        self.moved: list[tuple[Path, Path]] = []
        try:
            for path in map(Path, paths):
                if os.path.lexists(path):
                    backup = _aside_name(path)
                    os.rename(path, backup)
                    self.moved.append((path, backup))
        except BaseException:
            self.restore()
            raise

    def restore(self) -> None:
        """Put every entry back, removing whatever took its place meanwhile."""
        for path, backup in reversed(self.moved):
            if os.path.lexists(path):
                _remove(path)
            os.rename(backup, path)
        self.moved = []

    def discard(self) -> None:
        """Delete the entries set aside: their replacements are in place."""
        for _, backup in self.moved:
            _remove(backup)
        self.moved = []


def move_into_place(pairs: Iterable[tuple[Path, Path]], removals: Iterable[Path] = ()) -> None:
    """Rename each ``(staged, target)`` pair and remove ``removals``: all of it, or (on any error) none of it."""
    pairs = list(pairs)
    aside = SetAside([*removals, *(target for _, target in pairs)])
    moved: list[tuple[Path, Path]] = []
    try:
        for staged, target in pairs:
            os.rename(staged, target)
            moved.append((staged, target))
    except BaseException:
        for staged, target in reversed(moved):
            os.rename(target, staged)
        aside.restore()
        raise
    aside.discard()


def _plain_permissions(path: Path) -> None:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


class StagedFiles:
    """The temporary files of :func:`staged_files`: :meth:`path` gives the one to write for a target."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []
        self.created: list[Path] = []

    def path(self, target: PathLike) -> Path:
        target = Path(target)
        self.created += make_folders(target.parent)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        self.pairs.append((Path(name), target))
        return Path(name)


@contextlib.contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """Write several files all or nothing: ``with staged_files() as batch: write(batch.path(target))``.

    Each target is written to a temporary file beside it; when the block ends without an
    error every one is renamed into place (a replaced file is restored if a rename fails);
    on an error the temporary files and the folders made for them are removed.
    """
    # The body is a plain generator: decorated functions are not mutated by `make mutate` (mutmut).
    yield from _staged_files()


def _staged_files() -> Iterator[StagedFiles]:
    batch = StagedFiles()
    try:
        yield batch
        for staged, _ in batch.pairs:
            _plain_permissions(staged)
        move_into_place(batch.pairs)
    except BaseException:
        for staged, _ in batch.pairs:
            staged.unlink(missing_ok=True)
        remove_empty(batch.created)
        raise


@contextlib.contextmanager
def staged_folder(target: PathLike, replace: Iterable[str] = ()) -> Iterator[Path]:
    """Fill a folder all or nothing: yield an empty temporary folder beside ``target``, then move it in.

    A ``target`` that does not exist becomes the staged folder (one rename). Into an existing
    one each staged entry is moved, replacing an entry of the same name; the entries named in
    ``replace`` are removed too (an earlier run's own files); everything else in ``target`` stays.
    On an error nothing changes: the staged folder and the parent folders made for it are removed.
    """
    yield from _staged_folder(Path(target), replace)  # a plain generator, as in staged_files


def _staged_folder(target: Path, replace: Iterable[str]) -> Iterator[Path]:
    if os.path.lexists(target) and not target.is_dir():
        raise DMMInputError(f"output {target} is a file; expected a folder")
    check_writable_folder(target.parent, f"output folder {target}")
    created = make_folders(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        if not os.path.lexists(target):
            os.rename(staging, target)
            return
        names = {p.name for p in staging.iterdir()}
        removals = [target / n for n in replace if n not in names and os.path.lexists(target / n)]
        move_into_place([(staging / n, target / n) for n in sorted(names)], removals)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(created)
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched (as are the
    folders above it: those this call had to create are removed again).
    """
    with staged_files() as batch:
        yield batch.path(path)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_with(path: PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


# ----------------------------------------------------------------------------- reading text


def read_text_file(path: PathLike, what: str) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped); errors name ``what`` and the file."""
    path = existing_file(path, what, "a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DMMInputError(f"{what} {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                            f"{error.start}); save it as UTF-8") from None


def read_json_file(path: PathLike, what: str):
    """The JSON value of ``path``; a missing, undecodable or malformed file is a :class:`DMMInputError`."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DMMInputError(f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno}, "
                            f"column {error.colno})") from None


# ----------------------------------------------------------------------------- OSError in one line

_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EISDIR: "it is a folder where a file was expected",
    errno.ENOTDIR: "a part of the path is a file where a folder was expected",
    errno.ENOENT: "it does not exist",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOTEMPTY: "the folder is not empty",
}


def describe_os_error(error: OSError) -> str:
    """One line for an ``OSError``: the file, the reason in words, and what to do."""
    reason = _REASONS.get(error.errno, error.strerror or str(error))
    names = [str(n) for n in (error.filename, error.filename2) if n is not None]
    where = f"cannot use {' -> '.join(names)}: " if names else ""
    return (f"{where}{reason}; check the path, that its folder is writable and that the disk has free space")


@contextlib.contextmanager
def exclusive(guarded: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``guarded`` (a file or folder, which need not exist yet) while the block runs.

    So that two processes filling the same cache -- two notebooks in JupyterLab, two test workers,
    the book's training processes -- do not write it at once: the second waits, then finds the work
    done. The lock is the sibling file ``.<name>.lock``, created if needed. An advisory lock
    (``fcntl.flock``); without fcntl (Windows) there is none, which stays correct for a single process.
    """
    guarded = Path(guarded)
    lock_path = guarded.parent / f".{guarded.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
