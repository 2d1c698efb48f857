"""What the UvA-NEMO and MUG TFDS builders share.

A video dataset's builder says how to find its videos in the user's folder
(`find_videos`), its class names and its test subjects; this base class
preprocesses them (`cmm_jax.data.preprocess`: in parallel, resumable, bad
videos reported) and writes records in the layout of BUILD.md "Real data":
`frames` uint8 (T, S, S, 3), `landmarks` float32 (T, 68, 2) in crop pixels,
`label`, `subject`, `video`.

The preprocessed videos are cached under `<data_dir>/downloads/preprocessed/`
(TFDS's folder for intermediate files), so an interrupted build resumes, and
the report of skipped videos is written beside the finished dataset
(`preprocessing_report.json`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
import sys
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from cmm_jax import files, landmarks
from cmm_jax.data import preprocess
from cmm_jax.errors import UserError


@dataclasses.dataclass(eq=False)
class VideoConfig(tfds.core.BuilderConfig):
    """Preprocessing parameters, those of preprocess.Options with its defaults;
    each variant is its own config."""

    num_frames: int = preprocess.Options.num_frames
    fps: float = preprocess.Options.fps
    image_size: int = preprocess.Options.image_size
    detect_every: int = preprocess.Options.detect_every
    smooth_sigma: float = preprocess.Options.smooth_sigma
    min_frames: int = preprocess.Options.min_frames
    max_side: int = preprocess.Options.max_side


# Short names of the parameters in generated config names.
_ABBREVIATIONS = {
    "num_frames": "t",
    "fps": "fps",
    "image_size": "s",
    "detect_every": "det",
    "smooth_sigma": "sm",
    "min_frames": "min",
    "max_side": "max",
}


def parameters(config_class) -> tuple[str, ...]:
    base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    return tuple(f.name for f in dataclasses.fields(config_class) if f.name not in base)


def make_config(config_class, predefined: Sequence, **overrides):
    """The config with predefined[0]'s parameters changed by `overrides`.

    Parameters equal to a predefined config give that config (TFDS requires
    it); others get a name that spells out every value, so each variant is
    prepared in its own folder.
    """
    names = parameters(config_class)
    unknown = set(overrides) - set(names)
    if unknown:
        raise UserError(f"unknown dataset parameters {sorted(unknown)}; known: {list(names)}")
    default = predefined[0]
    values = {name: getattr(default, name) for name in names}
    for name, value in overrides.items():
        kind = type(values[name])
        try:
            values[name] = kind(value) if kind is not bool else _as_bool(value)
        except (TypeError, ValueError) as e:
            raise UserError(f"dataset parameter {name}={value!r} is not a {kind.__name__}") from e
    for config in predefined:
        if values == {name: getattr(config, name) for name in names}:
            return config
    name = "_".join(f"{_ABBREVIATIONS.get(k, k)}{_number(v)}" for k, v in values.items())
    return config_class(name=name, description="custom preprocessing", **values)


def _as_bool(value) -> bool:
    if isinstance(value, str):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(value)
    return bool(value)


def _number(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:g}".replace("-", "m").replace(".", "p")


def read_subject_list(path: str) -> list[str]:
    """Subject ids from a text file: one per line, '#' starts a comment."""
    with open(path) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def balanced_test_subjects(videos: Sequence[preprocess.Video], num_test_videos: int, seed: int = 0) -> list[str]:
    """A subject-disjoint test set of exactly num_test_videos videos where
    some set of subjects adds up to it (else the closest below): the subjects
    in a seeded random order, and among the sets that reach the count, the one
    found first in that order (subset sum); never empty. Same folder, same list."""
    counts: dict[str, int] = {}
    for video in videos:
        counts[video.subject] = counts.get(video.subject, 0) + 1
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    # reach[total] = the subjects (in order) of the first set found with that many videos.
    reach: dict[int, tuple[str, ...]] = {0: ()}
    for subject in order:
        for total, chosen in list(reach.items()):
            new_total = total + counts[subject]
            if new_total <= num_test_videos and new_total not in reach:
                reach[new_total] = chosen + (subject,)
        if num_test_videos in reach:
            break
    if max(reach) == 0 and order:  # every subject has more videos: the smallest one
        return [min(order, key=lambda subject: counts[subject])]
    return sorted(reach[max(reach)])


def preprocessing_options(config: VideoConfig) -> preprocess.Options:
    return preprocess.Options(**{f.name: getattr(config, f.name) for f in dataclasses.fields(preprocess.Options)})


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the video dataset builders (array_record by default: no TensorFlow)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Aligned frames and dlib landmarks, subject-disjoint split."}
    DEFAULT_CONFIG_NAME = "default"
    TEST_FRACTION = 0.1  # of the videos, for --write_split (UvA-NEMO: 124 of 1240)
    # Set by each dataset: CONFIG_CLASS, BUILDER_CONFIGS, MANUAL_DOWNLOAD_INSTRUCTIONS and
    REQUEST: str = ""  # one line: where to request the data, what manual_dir must hold
    # The test subjects, one per line: test_subjects.txt beside the builder's module.
    SPLIT_FILE: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(inspect.getfile(cls))), "test_subjects.txt")

    def __init__(self, *, file_format=None, workers: int = 0, cache_dir: str | None = None, **kwargs):
        self.workers = workers  # preprocessing processes (0: one per core)
        self.cache_dir = cache_dir
        super().__init__(file_format=file_format or "array_record", **kwargs)

    # -- to be provided by each dataset ------------------------------------
    def class_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def find_videos(self, manual_dir: str) -> list[preprocess.Video]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        t, s = config.num_frames, config.image_size
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    # Aligned crops; frame 0 is the video's first (neutral) frame.
                    "frames": tfds.features.Tensor(shape=(t, s, s, 3), dtype=np.uint8, encoding="zlib"),
                    # Crop pixel coordinates of the 68 dlib points.
                    "landmarks": tfds.features.Tensor(shape=(t, landmarks.NUM_POINTS, 2), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=self.class_names()),
                    "subject": tfds.features.Text(),
                    "video": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
        )

    def test_subjects(self) -> set[str]:
        """The test split's subjects (SPLIT_FILE)."""
        return set(read_subject_list(self.SPLIT_FILE))

    def _split_generators(self, dl_manager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        videos = self.find_videos(manual_dir)
        if not videos:
            raise UserError(f"no {self.name} videos found under {manual_dir}; {self.REQUEST}")
        cache_dir = self.cache_dir or os.path.join(
            os.fspath(dl_manager.download_dir), "preprocessed", self.name, self.builder_config.name
        )
        report = preprocess.preprocess_videos(
            videos, cache_dir, preprocessing_options(self.builder_config), workers=self.workers,
            description=self.name,
        )
        usable = [v for v in videos if v.id not in report.failed]
        test = self.test_subjects()
        splits = {
            "train": [v for v in usable if v.subject not in test],
            "test": [v for v in usable if v.subject in test],
        }
        summary = {
            **report.to_json(),
            "split": {k: {"videos": len(v), "subjects": len({x.subject for x in v})} for k, v in splits.items()},
            "test_subjects": sorted(test),
        }
        files.write_json(os.path.join(self.data_dir, "preprocessing_report.json"), summary)
        for name, split in splits.items():
            if not split:
                raise UserError(
                    f"{self.name}: no usable video for the {name} split ({len(report.failed)} of "
                    f"{len(videos)} skipped, {len(test)} test subjects); see {os.path.join(cache_dir, 'report.json')}"
                )
        print(
            f"{self.name}: train {len(splits['train'])} videos, test {len(splits['test'])} videos "
            f"(subject-disjoint), {len(report.failed)} skipped",
            file=sys.stderr,
        )
        return {name: self._generate_examples(split, cache_dir) for name, split in splits.items()}

    def _generate_examples(self, videos, cache_dir):
        for video in videos:
            record = preprocess.load_result(cache_dir, video.id)
            yield video.id, {**record, "label": video.label, "subject": video.subject, "video": video.id}


@contextlib.contextmanager
def quiet_tfds():
    """Hides TFDS's warnings about custom configs and not-yet-prepared folders."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def build(builder_class, data_dir, manual_dir=None, workers: int = 0, cache_dir=None, **config_overrides):
    """Prepare a video dataset (once; resumable) and return its builder.

    manual_dir: the folder holding the original data; needed only until the
    dataset is prepared.
    """
    config = make_config(builder_class.CONFIG_CLASS, builder_class.BUILDER_CONFIGS, **config_overrides)
    with quiet_tfds():
        builder = builder_class(config=config, data_dir=data_dir, workers=workers, cache_dir=cache_dir)
        if builder.is_prepared():
            return builder
    where = f"{builder.name} ({config.name}) is not prepared under {data_dir}"
    if not manual_dir:
        raise UserError(f"{where} and no manual_dir was given; {builder_class.REQUEST}")
    manual_dir = os.path.expanduser(manual_dir)
    if not os.path.isdir(manual_dir):
        raise UserError(f"{where} and manual_dir {manual_dir} is not a folder; {builder_class.REQUEST}")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
