"""UvA-NEMO smiles: 1240 videos of 400 people, posed ("deliberate") and spontaneous.

Each video becomes one clip of `num_frames` aligned 64x64 frames at `fps`
(the 50 fps source is subsampled), starting at its first, neutral frame,
with dlib's 68 points per frame (cmm_jax.data.preprocess). The split is
subject-disjoint: the test subjects are listed in test_subjects.txt.

    python -m cmm_jax.data.tfds_cli build datasets/uva_nemo --manual_dir=~/data/UvA-NEMO --data_dir=data/tfds
    tfds build datasets/uva_nemo ...   # the same, with tensorflow, apache-beam and mlcroissant installed
    python -m cmm_jax.data.prepare --dataset=uva_nemo --manual_dir=~/data/UvA-NEMO
"""

from __future__ import annotations

import os
import re
import sys

try:
    import cmm_jax  # noqa: F401
except ImportError:  # `tfds build datasets/uva_nemo` from a checkout: put its root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


from cmm_jax.data import preprocess, video_dataset

CLASSES = ("posed", "spontaneous")  # "deliberate" in the file names is posed
FILE_NAME = re.compile(r"^(\d+)_(deliberate|spontaneous)_smile_(\d+)\.mp4$", re.IGNORECASE)

_DEFAULT = video_dataset.VideoConfig(
    name="default",
    description="32 frames at 10 fps (3.2 s from the neutral first frame), 64x64 crops.",
)


class Builder(video_dataset.VideoBuilder):
    """UvA-NEMO smile database (Dibeklioglu, Salah, Gevers, ECCV 2012)."""

    CONFIG_CLASS = video_dataset.VideoConfig
    BUILDER_CONFIGS = [_DEFAULT]
    REQUEST = (
        "request UvA-NEMO at https://www.uva-nemo.org and give the folder of its "
        "NNN_{deliberate,spontaneous}_smile_K.mp4 videos as manual_dir"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
UvA-NEMO is licensed and cannot be downloaded automatically. Request it from
its authors at https://www.uva-nemo.org (the "UvA-NEMO Smile Database"),
then point manual_dir at the folder holding its videos, e.g.
  ~/data/UvA-NEMO/videos/001_deliberate_smile_1.mp4
  ~/data/UvA-NEMO/videos/001_spontaneous_smile_1.mp4 ...
(subfolders are searched; other files are ignored).
"""

    def class_names(self):
        return CLASSES

    def find_videos(self, manual_dir: str) -> list[preprocess.Video]:
        videos, seen = [], set()
        for folder, _, files in sorted(os.walk(manual_dir)):
            for name in sorted(files):
                match = FILE_NAME.match(name)
                if match is None:
                    continue
                if name in seen:
                    print(f"uva_nemo: {os.path.join(folder, name)} is a second copy; ignored", file=sys.stderr)
                    continue
                seen.add(name)
                subject, kind, _ = match.groups()
                videos.append(
                    preprocess.Video(
                        id=name[: -len(".mp4")],
                        path=os.path.join(folder, name),
                        label="posed" if kind.lower() == "deliberate" else "spontaneous",
                        subject=f"{int(subject):03d}",
                    )
                )
        return videos


def build(data_dir, manual_dir=None, workers: int = 0, cache_dir=None, **config_overrides) -> Builder:
    """Prepare uva_nemo (once; resumable) under data_dir and return its builder."""
    return video_dataset.build(Builder, data_dir, manual_dir, workers, cache_dir, **config_overrides)
