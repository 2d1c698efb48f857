"""MUG facial expressions: image sequences of 86 people, six basic emotions.

Each take (a folder of numbered jpgs at 19 fps) becomes one clip of
`num_frames` aligned 64x64 frames at `fps`, starting at its first, neutral
frame, with dlib's 68 points per frame (cmm_jax.data.preprocess). The split
is subject-disjoint: the test subjects are listed in test_subjects.txt.

    python -m cmm_jax.data.tfds_cli build datasets/mug --manual_dir=~/data/MUG --data_dir=data/tfds
    tfds build datasets/mug ...   # the same, with tensorflow, apache-beam and mlcroissant installed
    python -m cmm_jax.data.prepare --dataset=mug --manual_dir=~/data/MUG
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

try:
    import cmm_jax  # noqa: F401
except ImportError:  # `tfds build datasets/mug` from a checkout: put its root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


from cmm_jax.data import preprocess, video_dataset

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
NEUTRAL = "neutral"
SOURCE_FPS = 19.0  # MUG's capture rate
SUBJECT = re.compile(r"^\d+$")
TAKE = re.compile(r"^take\d+$", re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class MugConfig(video_dataset.VideoConfig):
    include_neutral: bool = False  # a seventh class from the neutral takes


_DEFAULT = MugConfig(
    name="default",
    description="Six emotions; 32 frames at 10 fps from the neutral first frame, 64x64 crops.",
)
_WITH_NEUTRAL = MugConfig(
    name="with_neutral",
    description="Six emotions and neutral; otherwise as default.",
    include_neutral=True,
)


class Builder(video_dataset.VideoBuilder):
    """MUG facial expression database (Aifanti, Papachristou, Delopoulos, WIAMIS 2010)."""

    CONFIG_CLASS = MugConfig
    BUILDER_CONFIGS = [_DEFAULT, _WITH_NEUTRAL]
    REQUEST = (
        "request MUG at https://mug.ee.auth.gr/fed/ and give the folder holding "
        "subjects3/NNN/<emotion>/takeNNN/img_XXXX.jpg as manual_dir"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
MUG is licensed and cannot be downloaded automatically. Request it from its
authors at https://mug.ee.auth.gr/fed/ (the "MUG Facial Expression
Database"), then point manual_dir at the folder that holds `subjects3`:
  ~/data/MUG/subjects3/001/happiness/take000/img_0000.jpg ...
"""

    def class_names(self):
        return EMOTIONS + ((NEUTRAL,) if self.builder_config.include_neutral else ())

    def find_videos(self, manual_dir: str) -> list[preprocess.Video]:
        root = _subjects_folder(manual_dir)
        if root is None:
            return []
        classes = set(self.class_names())
        videos = []
        for subject in sorted(os.listdir(root)):
            if not SUBJECT.match(subject) or not os.path.isdir(os.path.join(root, subject)):
                continue
            for emotion in sorted(os.listdir(os.path.join(root, subject))):
                if emotion.lower() not in classes:
                    continue
                for take in sorted(os.listdir(os.path.join(root, subject, emotion))):
                    path = os.path.join(root, subject, emotion, take)
                    if TAKE.match(take) and os.path.isdir(path):
                        videos.append(
                            preprocess.Video(
                                id=f"{int(subject):03d}/{emotion.lower()}/{take.lower()}",
                                path=path,
                                label=emotion.lower(),
                                subject=f"{int(subject):03d}",
                                fps=SOURCE_FPS,
                            )
                        )
        return videos


def _subjects_folder(manual_dir: str) -> str | None:
    """manual_dir/subjects3, manual_dir itself if it is subjects3, or the first subjects3 below."""
    if os.path.basename(os.path.normpath(manual_dir)) == "subjects3":
        return manual_dir
    for folder, subfolders, _ in os.walk(manual_dir):
        if "subjects3" in subfolders:
            return os.path.join(folder, "subjects3")
    return None


def build(data_dir, manual_dir=None, workers: int = 0, cache_dir=None, **config_overrides) -> Builder:
    """Prepare mug (once; resumable) under data_dir and return its builder."""
    return video_dataset.build(Builder, data_dir, manual_dir, workers, cache_dir, **config_overrides)
