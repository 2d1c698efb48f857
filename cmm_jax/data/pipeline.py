"""TFDS data sources read with grain, without TensorFlow.

Every dataset (smile_synth, uva_nemo, mug) is a TFDS builder written in the
array_record format; `builder.as_data_source(split)` gives random access and
grain shuffles, batches and splits each batch between processes. A training
iterator's position is a small JSON-able dict (`get_state`), saved with each
checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Any

import grain
import numpy as np

from cmm_jax import landmarks
from cmm_jax.configuration import BUILDER_MODULES, BUILDER_PACKAGES, VIDEO_DATASETS
from cmm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the models need to know about a dataset."""

    class_names: tuple[str, ...]
    style_names: tuple[str, ...]  # empty when the dataset has no style labels
    num_frames: int
    frame_size: int = 0  # side of the records' aligned frames; 0: no frames

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_styles(self) -> int:
        return len(self.style_names)


def builder_module(name: str):
    """The module of dataset `name`'s TFDS builder (with its `build(data_dir, **kw)`),
    from the first of BUILDER_PACKAGES that holds it. Packages are looked up
    without importing them: another `datasets` (Hugging Face's) is not ours
    and is left alone."""
    if name not in BUILDER_MODULES:
        raise UserError(f"unknown dataset {name!r}; choose one of {sorted(BUILDER_MODULES)}")
    relative = BUILDER_MODULES[name].replace(".", os.sep) + ".py"
    for package in BUILDER_PACKAGES:
        spec = importlib.util.find_spec(package)
        folders = (spec.submodule_search_locations or []) if spec else []
        if any(os.path.isfile(os.path.join(folder, relative)) for folder in folders):
            return importlib.import_module(f"{package}.{BUILDER_MODULES[name]}")
    raise UserError(
        f"cannot find the {name} dataset builder: run from the repository's root (its datasets/ folder) "
        "or install the repository (pip install .)"
    )


def load_builder(dataset_config):
    """Prepares (once) and returns the TFDS builder named by the config."""
    name = dataset_config.name
    module = builder_module(name)
    data_dir = os.path.expanduser(dataset_config.data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create data_dir {data_dir!r}: {e.strerror}") from e
    overrides = dict(dataset_config.get("builder_kwargs", {}) or {})
    if name in VIDEO_DATASETS:
        overrides["manual_dir"] = dataset_config.get("manual_dir", "") or None
        overrides["workers"] = dataset_config.get("workers", 0)
    return module.build(data_dir, **overrides)


def dataset_info(builder) -> DatasetInfo:
    features = builder.info.features
    style_names = tuple(features["style"].names) if "style" in features else ()
    num_frames = features["landmarks"].shape[0]
    return DatasetInfo(
        class_names=tuple(features["label"].names),
        style_names=style_names,
        num_frames=num_frames,
        frame_size=features["frames"].shape[1] if "frames" in features else 0,
    )


def preprocess(example: dict[str, Any]) -> dict[str, np.ndarray]:
    """A TFDS record -> model inputs.

    Returns landmarks float32 (T, 68, 2) in [-1, 1], label int32, style int32
    (-1 where the dataset has no style labels), and frames uint8 (T, S, S, 3)
    where the dataset has them.
    """
    size = np.shape(example["frames"])[1] if "frames" in example else landmarks.CROP_SIZE
    inputs = {
        "landmarks": landmarks.normalize(np.asarray(example["landmarks"], np.float32), size),
        "label": np.int32(example["label"]),
        "style": np.int32(example.get("style", -1)),
    }
    if "frames" in example:  # datasets with video (for the translator)
        inputs["frames"] = np.asarray(example["frames"], np.uint8)
    return inputs


def train_iterator(
    source,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
):
    """An endless, shuffled iterator of per-process batches.

    `batch_size` is the per-process batch. The records are shuffled the same
    way in every process and cut into global batches of batch_size *
    process_count; process i gets rows i * batch_size to (i + 1) * batch_size
    of each, and reads only those records. So the processes' batches, stacked
    in process order (`sharding.shard_batch`), are the one-process batches of
    the same seed, whatever the process count. Deterministic given the seed;
    `get_state()` / `set_state()` save and restore its position (the same in
    every process).

    A split of landmarks only is small (UvA-NEMO's 1240 clips of 32 frames:
    22 MB) and is read once, preprocessed, into memory: a batch of 64 then
    takes 4 ms instead of 21 ms of reading records (2-core CPU), the same
    batches. A split with frames is read record by record, each process
    reading only its rows.
    """
    if len(source) < batch_size * process_count:
        raise UserError(
            f"the training split has {len(source)} examples, "
            f"fewer than the batch of {batch_size * process_count}"
        )
    if len(source) and "frames" not in source[0]:
        dataset = grain.MapDataset.source([preprocess(source[i]) for i in range(len(source))]).shuffle(seed=seed)
    else:
        dataset = grain.MapDataset.source(source).shuffle(seed=seed).map(preprocess)
    # Global batch b is per-process batches b * process_count .. (b + 1) * process_count - 1.
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)[process_index::process_count]
    return iter(dataset.to_iter_dataset())


def load_split(source) -> dict[str, np.ndarray]:
    """A whole split as stacked arrays (for evaluation), in record order.

    Returns landmarks (N, T, 68, 2) in [-1, 1], reference (N, T, 68, 2): the
    noise-free landmarks where the dataset has them (smile_synth), else the
    landmarks; label (N,), style (N,), subject (N,) str.
    """
    examples = [source[i] for i in range(len(source))]
    batch = [preprocess(e) for e in examples]
    sequences = np.stack([b["landmarks"] for b in batch])
    reference = sequences
    if examples and "clean_landmarks" in examples[0]:
        reference = landmarks.normalize(np.stack([np.asarray(e["clean_landmarks"], np.float32) for e in examples]))
    return {
        "landmarks": sequences,
        "reference": reference,
        "label": np.array([b["label"] for b in batch], np.int32),
        "style": np.array([b["style"] for b in batch], np.int32),
        "subject": np.array([_as_str(e["subject"]) for e in examples]),
    }


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
