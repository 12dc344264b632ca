"""The one exception type that ``dmmlib`` raises for bad input.

Every check of user-supplied data (a file, a tensor, an argument) raises
:class:`DMMInputError` with a message that names the offending file or argument
and says what was expected. The command line catches it and prints the
message alone, without a stack trace, and exits with status 2.
"""

from pathlib import Path


class DMMInputError(ValueError):
    """Bad input: the message names the file or argument and what was expected."""


def existing_file(path, what: str, expected: str) -> Path:
    """``path`` as a :class:`pathlib.Path`, checked to name a file that exists (not a folder).

    ``what`` names the file in the error (e.g. ``"checkpoint"``), ``expected`` says what it should
    be (e.g. ``"a label PNG"``): ``checkpoint runs/x is a folder; expected a torch file``.
    """
    path = Path(path)
    if path.is_dir():
        raise DMMInputError(f"{what} {path} is a folder; expected {expected}")
    if not path.is_file():
        raise DMMInputError(f"{what} {path} does not exist; expected {expected}")
    return path
