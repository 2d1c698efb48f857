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
            if not (
                (record := json.loads(line)).get("stage") == stage
                and record.get("step", 0) > step
            )
        ]
        if len(kept) != len(lines):
            write_bytes_atomically(self.path, "".join(kept).encode())

    def write(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"stage": stage, "step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{stage}/{name}", float(value), int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
