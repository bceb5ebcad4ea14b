"""The one exception type that the CLI turns into a one-line message (no traceback)."""


class QGFError(Exception):
    """A user-facing error: the message names the problem and, where possible, the fix."""
