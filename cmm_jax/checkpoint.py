"""Orbax checkpoints that make a restart exact.

A checkpoint holds the train state (step, parameters, optimiser state, RNG)
and the data iterator's position, saved together, so a run killed at any
moment continues from its last save with the same batches and random numbers.
Orbax writes each save to a temporary folder and renames it when complete, so
a kill during a save leaves the previous checkpoint intact. A save that would
not fit on the disk is refused before anything is written, and one that fails
while writing (the disk filled meanwhile, a quota) becomes one UserError line
naming the reason and the intact step to continue from, instead of Orbax's
background threads' tracebacks.
"""

from __future__ import annotations

import logging as python_logging
import os
import re
import shutil
import sys

import jax
import numpy as np
from absl import logging
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cmm_jax.errors import UserError


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """{"params/encoder/.../kernel/value": shape} of a pytree of arrays or array metadata."""
    def name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)

    return {name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# Free space a save needs beyond its arrays' bytes: Orbax's metadata and the
# data iterator's state, with room to spare (a checkpoint is zstd-compressed, and its metadata is about 100 kB).
SAVE_HEADROOM = 1.1
SAVE_MARGIN_BYTES = 1 << 20
# How a failed file write reads in TensorStore's errors: ... Failed to write N
# bytes to file 8: No space left on device [tensorstore_spec=...] [os_error_code='28'].
_WRITE_FAILURE = re.compile(r"Failed to write \d+ bytes to file \d+: ([^\[\]\"']+?)\s*(?:\[|$)")


def _write_failure(error: BaseException) -> str | None:
    """The reason ("No space left on device") when `error`, or one it came
    from, is a failed file write; None for anything else."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        match = _WRITE_FAILURE.search(str(error))
        if match:
            return match.group(1)
        error = error.__cause__ or error.__context__
    return None


class _QuietWriteFailures(python_logging.Filter):
    """Drops the error logs about a failed checkpoint write, by Orbax (each of
    its background threads logs the same failure with its traceback) and by
    asyncio (the write tasks' "Task exception was never retrieved");
    `Checkpointer` turns the failure into one UserError line instead.
    Everything else passes."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        if record.levelno < python_logging.ERROR or not ("orbax" in record.pathname or record.name == "asyncio"):
            return True
        exception = record.exc_info[1] if record.exc_info else None
        return _write_failure(exception) is None and _WRITE_FAILURE.search(record.getMessage()) is None


_QUIET = _QuietWriteFailures()


def _closed_loop_hook(previous):
    """sys.unraisablehook that drops one error: after a write fails, Orbax
    closes its event loop while TensorStore still finishes the other writes,
    and each of their completion callbacks fails on the closed loop
    (`loop.call_soon_threadsafe`), printing a traceback the user can do
    nothing with. Only that error, raised there; the rest goes on to
    `previous`."""

    def hook(unraisable):
        frames, traceback = [], unraisable.exc_traceback
        while traceback is not None:
            frames.append(traceback.tb_frame.f_code.co_name)
            traceback = traceback.tb_next
        if (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
                and frames[-2:] == ["call_soon_threadsafe", "_check_closed"]):
            return
        previous(unraisable)

    hook.cmm_jax_closed_loop = True
    return hook


def _state_bytes(tree) -> int:
    return sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(tree))


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "data"),
        )
        for logger in ("absl", "asyncio"):
            python_logging.getLogger(logger).addFilter(_QUIET)  # once: the same filter object
        if not getattr(sys.unraisablehook, "cmm_jax_closed_loop", False):
            sys.unraisablehook = _closed_loop_hook(sys.unraisablehook)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict | None) -> None:
        """Saves in the background (Orbax's async save); UserError when the
        disk cannot take it (checked first, on every process together) or a
        write fails, this save's or the last one's."""
        # The last save first (Orbax's save would wait for it too): then the free
        # space is what is left after it, and the step a message names is whole.
        self.wait()
        self._check_free_space(state)
        self._as_user_error(lambda: self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
            ),
        ))

    def _check_free_space(self, state) -> None:
        """UserError, before anything is written, when this process's disk has
        less free space than the save needs; every process agrees (one that
        stopped alone would leave the others waiting in the save)."""
        needed = int(SAVE_HEADROOM * _state_bytes(state)) + SAVE_MARGIN_BYTES
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:  # not a local folder: the write itself will tell
            free = needed
        fits = free >= needed
        everywhere = fits if jax.process_count() == 1 else bool(multihost_utils.process_allgather(np.array(fits)).all())
        if not everywhere:
            where = (f"{free / 2**20:.1f} MiB free here" if not fits else "another process's disk is short")
            raise UserError(
                f"not enough disk space for a checkpoint in {self.directory}: {where}, a save needs about "
                f"{needed / 2**20:.1f} MiB{self._continue_from()}")

    def _continue_from(self) -> str:
        step = self.manager.latest_step()
        if step is None:
            return "; there is no complete checkpoint here yet, so a rerun starts this stage again"
        return f"; step {step}, the last complete checkpoint, is intact and a rerun continues from it"

    def _as_user_error(self, action):
        """action(), with a failed file write as one UserError line."""
        try:
            return action()
        except Exception as e:
            reason = _write_failure(e)
            if reason is None:
                raise
            raise UserError(f"cannot write a checkpoint in {self.directory}: {reason}"
                            f"{self._continue_from()}") from e

    def _check_matches(self, abstract_state, step: int) -> None:
        """UserError, before any reading, when the saved arrays are not the
        ones `abstract_state` expects (Orbax's own failure leaves background
        threads that print tracebacks at exit)."""
        path = os.path.join(os.path.abspath(self.directory), str(step), "state")
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.ERROR)  # Orbax warns that the item has no step metadata: it is the step's
        try:
            saved = _shapes(ocp.StandardCheckpointer().metadata(path).item_metadata)
        finally:
            logging.set_verbosity(verbosity)
        for name, shape in _shapes(abstract_state).items():
            if saved.get(name) != shape:
                found = "missing" if name not in saved else f"shape {saved[name]}"
                raise UserError(
                    f"the checkpoint in {self.directory} does not match this config "
                    f"(different model sizes or optimiser?): {name} is {found}, the config needs {shape}"
                )

    def restore(self, abstract_state, step: int | None = None):
        """-> (state, data_state) of `step` (default: the latest)."""
        step = self.manager.latest_step() if step is None else step
        self._check_matches(abstract_state, step)
        restored = self._mismatch_as_user_error(lambda: self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        ))
        return restored["state"], restored["data"]

    def restore_params(self, abstract_params, step: int | None = None):
        """Only the `params` of the train state at `step` (default: the latest):
        the optimiser state it was saved with may have any structure."""
        step = self.manager.latest_step() if step is None else step
        item = {"params": abstract_params}
        self._check_matches(item, step)
        state = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)
        return self._mismatch_as_user_error(
            lambda: self.manager.restore(step, args=ocp.args.Composite(state=state)))["state"]["params"]

    def _mismatch_as_user_error(self, restore):
        try:
            return restore()
        except (ValueError, KeyError) as e:
            raise UserError(
                f"the checkpoint in {self.directory} does not match this config "
                f"(different model sizes or optimiser?): {str(e).splitlines()[0]}"
            ) from e

    def wait(self) -> None:
        self._as_user_error(self.manager.wait_until_finished)

    def close(self) -> None:
        self.manager.close()
