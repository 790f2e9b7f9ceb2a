"""One exception type for problems the user can fix (bad path, bad config, wrong weights).

Front ends catch it and print its message as one line, with a non-zero exit, never a traceback.
"""


class UserError(Exception):
    """A clear, one-line, user-facing error."""
