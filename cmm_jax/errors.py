"""The one exception type for mistakes a user can fix (bad config, bad input).

Entry points catch it and print its message as a single line with a non-zero
exit code; everything else is a bug and keeps its traceback.
"""

import sys


class UserError(Exception):
    """A problem with the user's input or configuration, stated in one line."""


def run_or_exit(fn):
    """Runs fn(); a UserError becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
