"""The one exception type for bad user input.

Anything the user can get wrong (a malformed model file, a missing dataset, a
layer the hardware cannot take) raises `UserError` with a message that names
what is wrong and what to do. The `mpq` command prints it and exits non-zero
without a traceback; library callers can catch it.
"""


class UserError(Exception):
    """Bad input from the user: the message says what and how to fix it."""
