"""Errors a user can act on. The CLI prints their message as one line, with no traceback."""


class OcbenchError(Exception):
    """Something the user must fix; the message names the problem and the fix. Exit code 1."""

    exit_code = 1


class UsageError(OcbenchError):
    """A bad config, option or name, found before any work starts. Exit code 2."""

    exit_code = 2
