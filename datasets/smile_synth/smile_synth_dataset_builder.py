"""smile_synth: procedurally generated smile landmark sequences, two classes, five styles.

Nothing is downloaded: `cmm_jax.data.synth` draws every example from a seed.
Splits "train", "validation" and "test" hold disjoint people.
Write and read it without TensorFlow:

    builder = build(data_dir, num_train_subjects=50)   # or Builder(config=...)
    train = builder.as_data_source("train")            # random access, for grain
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from cmm_jax import landmarks
from cmm_jax.data import synth


@dataclasses.dataclass(eq=False)
class SmileSynthConfig(tfds.core.BuilderConfig):
    """Size and randomness of one smile_synth variant.

    Train subjects are 0 ... num_train_subjects - 1, validation subjects follow
    them, then test subjects: the splits share no identity.
    """

    num_train_subjects: int = 200
    num_validation_subjects: int = 40
    num_test_subjects: int = 40
    clips_per_class: int = 4
    num_frames: int = 32
    noise_std: float = 0.01  # tracking noise (AR(1) std), in inter-ocular distances
    seed: int = 0


PARAMETERS = tuple(
    field.name
    for field in dataclasses.fields(SmileSynthConfig)
    if field.name not in {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
)


def _config_name(values: dict) -> str:
    """A directory-safe name that spells out every parameter value."""

    def number(value) -> str:
        return repr(value).replace("-", "m").replace(".", "p")

    return (
        f"s{values['num_train_subjects']}x{values['num_validation_subjects']}x{values['num_test_subjects']}"
        f"_c{values['clips_per_class']}_t{values['num_frames']}"
        f"_n{number(float(values['noise_std']))}_seed{values['seed']}"
    )


_DEFAULT = SmileSynthConfig(
    name="default", description="200 train, 40 validation and 40 test subjects, 4 clips per class, 32 frames."
)
_TINY = SmileSynthConfig(
    name="tiny",
    description="12 train, 4 validation and 6 test subjects, 2 clips per class, 16 frames: for tests.",
    num_train_subjects=12,
    num_validation_subjects=4,
    num_test_subjects=6,
    clips_per_class=2,
    num_frames=16,
)


def _values(config: SmileSynthConfig) -> dict:
    return {name: getattr(config, name) for name in PARAMETERS}


def split_subjects(config: SmileSynthConfig) -> dict[str, range]:
    """The subject numbers of each split (`synth.generate_examples`'s subjects)."""
    num_train, num_validation = config.num_train_subjects, config.num_validation_subjects
    return {"train": range(num_train),
            "validation": range(num_train, num_train + num_validation),
            "test": range(num_train + num_validation, num_train + num_validation + config.num_test_subjects)}


def make_config(**overrides) -> SmileSynthConfig:
    """The config with the default parameters changed by `overrides`.

    Its name is derived from all parameter values, so each variant caches in its
    own directory; parameters equal to a predefined config give that config
    itself ("default", "tiny"), as TFDS requires.
    """
    unknown = set(overrides) - set(PARAMETERS)
    if unknown:
        raise ValueError(f"unknown smile_synth parameters {sorted(unknown)}; known: {PARAMETERS}")
    values = {**_values(_DEFAULT), **overrides}
    for predefined in (_DEFAULT, _TINY):
        if values == _values(predefined):
            return predefined
    return SmileSynthConfig(name=_config_name(values), description="custom smile_synth", **values)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for smile_synth."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Landmark sequences, classes and styles.",
        "2.0.0": (
            "Generator v2: AU fields derived from each person's neutral face; per-person side bias, "
            "age, expressivity, smile type and style repertoire; overlapping class dynamics "
            "(Bayes ceiling ~0.89) and continuous, blended styles; AR(1) tracking noise with outliers. "
            "New feature clean_landmarks (noise-free); new validation split."
        ),
    }
    BUILDER_CONFIGS = [_DEFAULT, _TINY]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    # Aligned 64x64 crop pixel coordinates; frame 0 is neutral.
                    "landmarks": tfds.features.Tensor(
                        shape=(config.num_frames, landmarks.NUM_POINTS, 2), dtype=np.float32
                    ),
                    # The same points without tracking noise.
                    "clean_landmarks": tfds.features.Tensor(
                        shape=(config.num_frames, landmarks.NUM_POINTS, 2), dtype=np.float32
                    ),
                    "label": tfds.features.ClassLabel(names=synth.CLASSES),
                    "style": tfds.features.ClassLabel(names=synth.STYLES),
                    "subject": tfds.features.Text(),
                    "video": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://arxiv.org/abs/1802.01873",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(subjects.start, len(subjects))
                for split, subjects in split_subjects(self.builder_config).items()}

    def _generate_examples(self, subject_offset: int, num_subjects: int):
        config = self.builder_config
        yield from synth.generate_examples(
            seed=config.seed,
            num_subjects=num_subjects,
            clips_per_class=config.clips_per_class,
            num_frames=config.num_frames,
            noise_std=config.noise_std,
            subject_offset=subject_offset,
        )


def build(data_dir, **config_overrides) -> Builder:
    """Prepare smile_synth with these parameters under data_dir (once) and return its builder."""
    builder = Builder(config=make_config(**config_overrides), data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder
