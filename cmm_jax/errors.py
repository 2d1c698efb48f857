"""The one exception type for mistakes a user can fix (bad config, bad input).

Entry points catch it and print its message as a single line with a non-zero
exit code; everything else is a bug and keeps its traceback. A full disk is
the user's to fix too: a write that fails for want of space (no space left,
quota, file-size limit) is one line as well.
"""

import errno
import sys

# Errors of a write that ran out of room, not of the program.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UserError(Exception):
    """A problem with the user's input or configuration, stated in one line."""


def run_or_exit(fn):
    """Runs fn(); a UserError, or an OSError of a disk without room, becomes
    one line on stderr and exit code 2; Ctrl-C, the line "interrupted" and
    exit code 130 (what was written before stays: writes are atomic)."""
    try:
        return fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in NO_ROOM:
            raise
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
