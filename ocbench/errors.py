"""Errors a user can act on. The CLI prints their message as one line, with no traceback."""


class OcbenchError(Exception):
    """Something the user must fix; the message names the problem and the fix. Exit code 1."""

    exit_code = 1


class UsageError(OcbenchError):
    """A bad config, option or name, found before any work starts. Exit code 2."""

    exit_code = 2


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line of at most `limit` characters (its type's name if empty),
    for an error or a report that names what went wrong."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
