"""The one exception type that ``dmmlib`` raises for bad input.

Every check of user-supplied data (a file, a tensor, an argument) raises
:class:`DMMInputError` with a message that names the offending file or argument
and says what was expected. The command line catches it and prints the
message alone, without a stack trace, and exits with status 2.
"""


class DMMInputError(ValueError):
    """Bad input: the message names the file or argument and what was expected."""
