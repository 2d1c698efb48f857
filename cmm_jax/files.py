"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import re
import uuid

# Names of the temporary files write_atomically makes (".<name>.<8 hex>.tmp<suffix>").
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]+)?$")


def write_atomically(path, write) -> None:
    """Call write(temporary_path), then rename the result to `path`.

    The temporary file is in the same folder (so the rename is atomic) and has
    the same suffix (so writers that pick a format by suffix, or add one, keep
    it). A failure or interruption removes it and leaves `path` as it was.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # The writer creates the temporary file itself, so it gets the usual permissions.
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp{os.path.splitext(name)[1]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_bytes_atomically(path, data: bytes) -> None:
    def write(temporary):
        with open(temporary, "wb") as f:
            f.write(data)

    write_atomically(path, write)
