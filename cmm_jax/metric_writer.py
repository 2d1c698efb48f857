"""Training metrics as JSON lines and TensorBoard events."""

from __future__ import annotations

import json
import os
import sys

import jax
from tensorboardX import SummaryWriter
from tqdm import tqdm

from cmm_jax.files import write_bytes_atomically


def announce(message: str) -> None:
    """One line of progress for people, on stderr, from process 0 only."""
    if jax.process_index() == 0:
        tqdm.write(message, file=sys.stderr)


def _parsed(line: str) -> dict | None:
    """A JSON line's record, or None for a line cut short (a run killed mid-write)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _append_line(path: str, line: bytes) -> None:
    """Appends `line` whole or not at all: a write that fails part way (a full
    disk) is cut back off, so the file stays whole lines; the OSError names `path`."""
    with open(path, "ab", buffering=0) as f:
        start = f.seek(0, os.SEEK_END)
        rest = memoryview(line)
        try:
            while rest:
                rest = rest[f.write(rest):]
        except OSError as e:
            f.truncate(start)
            raise OSError(e.errno, e.strerror, path) from e


class MetricWriter:
    """Writes JSON lines to `path` (one object per log step) and TensorBoard
    events under `tensorboard_dir`. Only process 0 writes."""

    def __init__(self, path: str, tensorboard_dir: str):
        self.enabled = jax.process_index() == 0
        self.path = path
        self._tensorboard = SummaryWriter(tensorboard_dir) if self.enabled else None

    def forget_after(self, stage: str, step: int) -> None:
        """Drop lines of `stage` past `step`: a resumed run logs them again."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = f.readlines()
        kept = [
            line
            for line in lines
            if (record := _parsed(line)) is not None
            and not (record.get("stage") == stage and record.get("step", 0) > step)
        ]
        if len(kept) != len(lines):
            write_bytes_atomically(self.path, "".join(kept).encode())

    def write(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"stage": stage, "step": int(step), **{k: float(v) for k, v in metrics.items()}}
        _append_line(self.path, (json.dumps(record) + "\n").encode())
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{stage}/{name}", float(value), int(step))

    def close(self) -> None:
        """Flushes and closes the event files; an OSError (a full disk) names
        the TensorBoard folder, and tensorboardX is kept from failing again in
        its exit handler (the events that did not fit are lost; metrics.jsonl
        keeps every whole line)."""
        if self._tensorboard is None:
            return
        writers = list((self._tensorboard.all_writers or {}).values())
        try:
            self._tensorboard.close()
        except OSError as e:
            for writer in writers:
                writer.event_writer._closed = True  # tensorboardX's own exit handler: a no-op now
            raise OSError(e.errno, e.strerror, self._tensorboard.logdir) from e
        finally:
            self._tensorboard = None
