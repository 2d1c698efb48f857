"""Orbax checkpoints that make a restart exact.

A checkpoint holds the train state (step, parameters, optimiser state, RNG)
and the data iterator's position, saved together, so a run killed at any
moment continues from its last save with the same batches and random numbers.
Orbax writes each save to a temporary folder and renames it when complete, so
a kill during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from cmm_jax.errors import UserError


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

    def restore(self, abstract_state, step: int | None = None):
        """-> (state, data_state) of `step` (default: the latest)."""
        step = self.manager.latest_step() if step is None else step
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError) as e:
            raise UserError(
                f"the checkpoint in {self.directory} does not match this config "
                f"(different model sizes or optimiser?): {str(e).splitlines()[0]}"
            ) from e
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
