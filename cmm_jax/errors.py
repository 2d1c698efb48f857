"""The one exception type for mistakes a user can fix (bad config, bad input).

Entry points catch it and print its message as a single line with a non-zero
exit code; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or configuration, stated in one line."""
