"""A run folder (workdir): the one module that names what is inside it.

    DIR/config.json             the config the run was trained with
    DIR/dataset_info.json       what sampling needs to know of the dataset
    DIR/checkpoints/<stage>/    Orbax checkpoints of each stage
    DIR/metrics.jsonl, DIR/tensorboard/   training metrics
    DIR/input_range.json        the neutral training faces' range (`cmm_jax.input_check`)
    DIR/residuals.npz           the multi-mode stage's residual bank (`inference.ResidualBank`)
    DIR/timings.json            seconds per phase of the last `cmm_jax.main` (`cmm_jax.timing`)
    DIR/eval.json, DIR/eval_<split>.json, DIR/eval_<split>_<tag>.json   `cmm_jax.evaluate`
    DIR/samples/                grids and animations of the K modes, the astronaut per renderer

`load_model` restores a trained stage's parameters (not its optimiser state:
a model trained with any optimiser settings loads) from the run, else from
the run its config reuses (`config.load_from`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from cmm_jax import input_check, sharding
from cmm_jax.configuration import MODEL_OPTIONS, model_option
from cmm_jax.inference import ResidualBank
from cmm_jax.checkpoint import Checkpointer
from cmm_jax.data import pipeline
from cmm_jax.errors import UserError
from cmm_jax.files import write_bytes_atomically, write_json, write_npz
from cmm_jax.stages import STAGES


def checkpoint_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "checkpoints", name)


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, "metrics.jsonl")


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, "tensorboard")


def samples_dir(workdir: str) -> str:
    return os.path.join(workdir, "samples")


def eval_path(workdir: str, split: str, tag: str = "") -> str:
    """eval.json (test), eval_<split>.json, or with a tag eval_<split>_<tag>.json."""
    name = "eval" if split == "test" and not tag else f"eval_{split}"
    return os.path.join(workdir, f"{name}_{tag}.json" if tag else f"{name}.json")


def config_path(workdir: str) -> str:
    return os.path.join(workdir, "config.json")


def write_config(workdir: str, config, info: pipeline.DatasetInfo) -> None:
    """config.json, and dataset_info.json: what sampling needs without the dataset at hand."""
    write_bytes_atomically(config_path(workdir), config.to_json_best_effort(indent=2).encode())
    write_json(os.path.join(workdir, "dataset_info.json"), dataclasses.asdict(info))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = config_path(workdir)
    if not os.path.isfile(path):
        raise UserError(f"no trained run in {workdir!r} ({path} is missing); "
                        f"train one with python -m cmm_jax.main --config=experiments/smile.py --workdir={workdir}")
    with open(path) as f:
        try:
            return ml_collections.ConfigDict(json.load(f))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg}); is the run intact?") from e


def load_dataset_info(workdir: str, config) -> pipeline.DatasetInfo:
    """The class names and clip length the run was trained with."""
    path = os.path.join(workdir, "dataset_info.json")
    if os.path.isfile(path):
        with open(path) as f:
            return pipeline.DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()})
    # Runs from before dataset_info.json: ask the dataset itself.
    return pipeline.dataset_info(pipeline.load_builder(config.dataset))


def timings_path(workdir: str) -> str:
    return os.path.join(workdir, "timings.json")


def write_timings(workdir: str, phases: dict[str, float]) -> None:
    """timings.json: `cmm_jax.timing.phases()` of the run that just ended."""
    write_json(timings_path(workdir), phases)


def write_input_range(workdir: str, stats: dict) -> None:
    """input_range.json: `input_check.neutral_range`'s dict."""
    write_json(os.path.join(workdir, "input_range.json"), stats, sort_keys=True)


def read_input_range(workdir: str) -> dict | None:
    """input_range.json, or None for a run trained before it existed.

    Raises UserError when the file is there but is not such a range.
    """
    path = os.path.join(workdir, "input_range.json")
    if not os.path.isfile(path):
        return None
    advice = "delete it to sample without the input check"
    with open(path) as f:
        try:
            stats = json.load(f)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg}); {advice}") from e
    for name in input_check.MEASURES:
        entry = stats.get(name) if isinstance(stats, dict) else None
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), (int, float)) for k in ("low", "high")):
            raise UserError(f"{path} has no low/high of {name}; {advice}")
    return stats


def _searched(config, workdir: str) -> list[str]:
    """Where a stage's checkpoint is looked for: the run, then `config.load_from`."""
    return [workdir] + ([config.load_from] if config.get("load_from") else [])


def _open_checkpoint(directory: str, name: str) -> Checkpointer | None:
    """An open Checkpointer of stage `name` in `directory` when it holds a
    complete checkpoint (the caller closes it), else None."""
    if not os.path.isdir(checkpoint_dir(directory, name)):
        return None
    checkpointer = Checkpointer(checkpoint_dir(directory, name))
    if checkpointer.latest_step() is None:
        checkpointer.close()
        return None
    return checkpointer


def has_model(name: str, config, workdir: str) -> bool:
    """Whether `load_model` would find a checkpoint of stage `name`."""
    for directory in _searched(config, workdir):
        checkpointer = _open_checkpoint(directory, name)
        if checkpointer is not None:
            checkpointer.close()
            return True
    return False


def _check_model_options(name: str, config, directory: str) -> None:
    """UserError if the run in `directory` trained stage `name` with other
    MODEL_OPTIONS than `config` asks for (its config.json; none: no check)."""
    path = config_path(directory)
    if name not in MODEL_OPTIONS or not os.path.isfile(path):
        return
    trained = load_config(directory)
    for key in MODEL_OPTIONS[name]:
        theirs, ours = model_option(trained, name, key), model_option(config, name, key)
        if theirs != ours:
            raise UserError(f"the {name} stage in {directory} was trained with {name}.{key}={theirs}, and this "
                            f"config says {ours}: pass --config.{name}.{key}={theirs} to use it, or train the stage "
                            f"(--config.stages={name})")


def load_model(name: str, config, info, workdir: str, mesh=None) -> nnx.Module:
    """The trained model of stage `name`: the parameters of the latest
    checkpoint in `workdir`, else in `config.load_from`, trained with the
    MODEL_OPTIONS that `config` has (UserError otherwise)."""
    mesh = mesh or sharding.make_mesh()
    searched = _searched(config, workdir)
    for directory in searched:
        checkpointer = _open_checkpoint(directory, name)
        if checkpointer is None:
            continue
        try:
            _check_model_options(name, config, directory)
            graphdef, abstract = nnx.split(STAGES[name].abstract(config, info))
            replicated = sharding.replicated(mesh)
            params = checkpointer.restore_params(
                jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract))
            return nnx.merge(graphdef, params)
        finally:
            checkpointer.close()
    raise UserError(
        f"no checkpoint of stage {name!r} in {' or '.join(searched)}; "
        f"train it first (--config.stages={name})"
    )


def residuals_path(workdir: str) -> str:
    return os.path.join(workdir, "residuals.npz")


def write_residuals(workdir: str, bank: ResidualBank) -> None:
    write_npz(residuals_path(workdir), residuals=bank.residuals, counts=bank.counts)


def load_residuals(config, workdir: str) -> ResidualBank | None:
    """The residual bank of the run (or of config.load_from's, like `load_model`), None if neither has one."""
    for directory in _searched(config, workdir):
        path = residuals_path(directory)
        # A multi-mode stage trained in this run makes its own bank; one from
        # load_from belongs to that run's multi-mode stage.
        if os.path.isdir(checkpoint_dir(directory, "multimode")) or os.path.isfile(path):
            if not os.path.isfile(path):
                return None
            try:
                with np.load(path) as f:
                    return ResidualBank(f["residuals"], f["counts"])
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"{path} is not a residual bank ({e}); retrain the multimode stage") from e
    return None
