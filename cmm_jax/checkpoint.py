"""Orbax checkpoints that make a restart exact.

A checkpoint holds the train state (step, parameters, optimiser state, RNG)
and the data iterator's position, saved together, so a run killed at any
moment continues from its last save with the same batches and random numbers.
Orbax writes each save to a temporary folder and renames it when complete, so
a kill during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os

import jax
from absl import logging
import orbax.checkpoint as ocp

from cmm_jax.errors import UserError


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """{"params/encoder/.../kernel/value": shape} of a pytree of arrays or array metadata."""
    def name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)

    return {name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "data"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict | None) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
            ),
        )

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
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
