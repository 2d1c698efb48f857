"""Tiny fake copies of UvA-NEMO and MUG, with known landmarks.

The real datasets are licensed, so tests (and users without the data) get
stand-ins with the same on-disk layout:

* UvA-NEMO: ``ROOT/NNN_deliberate_smile_K.mp4`` and
  ``ROOT/NNN_spontaneous_smile_K.mp4`` (H.264, 50 fps; deliberate = posed);
* MUG: ``ROOT/subjects3/NNN/<emotion>/takeNNN/img_XXXX.jpg`` (19 fps).

Every good video shows one real face, scikit-image's astronaut, animated by
the piecewise-affine warp of `cmm_jax.warp` along a landmark path we choose, so
its 68 points in every frame are KNOWN exactly (the warp puts them there) and
a landmark detector can be scored against them. A video is made in steps:

1. base face (once): dlib's points on the astronaut; an aligned square crop
   with the face placed as in the template of `cmm_jax.alignment`;
2. expression: `action_units.expression_path`, action-unit displacement
   fields times an intensity envelope (neutral hold, onset, apex, offset)
   whose timing and mix depend on the kind: a posed or a spontaneous smile,
   or one of MUG's emotions; frame 0 is the neutral template shape, exactly;
3. head motion: a small smooth similarity (rotation, scale, sub-pixel shift)
   inside the crop, plus whole-pixel drift of where the crop is pasted;
4. frame: the warped crop (enlarged when the face is big, with the points
   mapped by the same resize) alpha-pasted with a feathered ellipse onto a
   smooth deterministic background.

The datasets also get, on request, one corrupt video (an mp4 cut to a third
of its bytes; a take of truncated jpgs) and one face-less video (a panning
view of scikit-image's coffee cup), so that a pipeline's error paths run.

Everything is deterministic given the seeds. The warp runs on a crop of at
most WARP_SIZE pixels, never on a whole frame.

CLI: ``python -m cmm_jax.data.fake --dataset=uva_nemo --out=DIR``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
import zlib
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from skimage import data

from cmm_jax import alignment, face, files, landmarks, warp
from cmm_jax.data import action_units

UVA_NEMO_FPS = 50
MUG_FPS = 19

# Largest crop the warp runs on; bigger faces are warped at this size and enlarged.
WARP_SIZE = 256
# The template puts the outer eye corners alignment.TEMPLATE_EYE_DISTANCE * size apart.
CROP_PER_IOD = 1.0 / alignment.TEMPLATE_EYE_DISTANCE
MP4_CRF = 18  # H.264 quality (0 lossless .. 51 worst); 18 is visually lossless
JPEG_QUALITY = 95


def head_motion(num_frames: int, seed: int = 0) -> np.ndarray:
    """Small smooth head motion, zero at frame 0. (T, 4) float64.

    Columns: rotation (radians, |.| <~ 1.5 deg), relative scale change
    (|.| <~ 1.5 %), x and y shift in IOD units (|.| <~ 0.02). Applied inside
    the face crop by `_Sequence`, about the eye-corner midpoint.
    """
    rng = np.random.default_rng([seed, 7919])
    amplitude = np.array([np.deg2rad(1.5), 0.015, 0.02, 0.02])
    return action_units.random_wiggle(rng, num_frames, 4) * amplitude


# ---------------------------------------------------------------------------
# Rendering


@functools.cache
def _astronaut_fit() -> face.FaceFit:
    return face.find_face(files.astronaut())


@functools.cache
def base_face(size: int, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's face in a `size` crop placed like the template.

    Returns (crop uint8 (size, size, 3), its dlib points float32 (68, 2) in
    crop pixels), both read-only. mirror: the left-right mirror image (points
    relabelled), a second "identity".
    """
    fit = _astronaut_fit()
    matrix = alignment.alignment_matrix(fit.points, size)
    crop = alignment.warp_to_crop(files.astronaut(), matrix, size)
    points = landmarks.apply_affine(matrix, fit.points.astype(np.float64))
    if mirror:
        crop = np.ascontiguousarray(crop[:, ::-1])
        points = landmarks.mirror(points, size)
    points = points.astype(np.float32)
    crop.setflags(write=False)
    points.setflags(write=False)
    return crop, points


def background(frame_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth, face-less backdrop uint8 (H, W, 3): a colour gradient plus low-frequency noise."""
    width, height = frame_size
    rng = np.random.default_rng([seed, 104729])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs / width)[..., None] * 0.6 + (ys / height)[..., None] * 0.4
    low, high = rng.uniform(60, 200, size=(2, 3)).astype(np.float32)
    image = low + t * (high - low)
    coarse = rng.normal(0.0, 25.0, size=(6, 10, 3)).astype(np.float32)
    noise = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize((width, height), Image.BICUBIC))
         for c in range(3)], -1)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


@functools.cache
def _alpha(size: int) -> np.ndarray:
    """Feathered ellipse (size, size, 1) float32: 1 over the face, 0 at the crop corners."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    center = np.array([0.5, 0.52]) * (size - 1)
    radius = np.hypot((xs - center[0]) / (0.5 * size), (ys - center[1]) / (0.5 * size))
    alpha = np.clip((1.0 - radius) / 0.15, 0.0, 1.0)[..., None]
    alpha.setflags(write=False)
    return alpha


def _similarity(points: np.ndarray, motion: np.ndarray, iod: float) -> np.ndarray:
    """points (T, 68, 2) moved by per-frame head motion (T, 4) about the eye midpoint."""
    center = 0.5 * (points[:, landmarks.RIGHT_EYE_OUTER] + points[:, landmarks.LEFT_EYE_OUTER])[:, None]
    angle, scale = motion[:, 0], 1.0 + motion[:, 1]
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (T, 2, 2)
    moved = np.einsum("tij,tpj->tpi", rotation, points - center) + center
    return moved + motion[:, None, 2:] * iod


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in frame_size)
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise ValueError(f"frame_size must be even and >= 64 (H.264 yuv420p), got {frame_size}")
    return width, height


class _Sequence:
    """A planned fake video: known points, and frames made on demand."""

    def __init__(self, kind: str, num_frames: int, frame_size: tuple[int, int], fps: float, seed: int,
                 face_scale: float | None, mirror: bool):
        width, height = self.frame_size = _check_frame_size(frame_size)
        if face_scale is None:
            face_scale = 0.25 * min(width, height)
        size = 2 * int(round(0.5 * face_scale * CROP_PER_IOD))  # crop side in frame pixels
        drift = 6  # most whole-pixel drift of the paste position
        if size + 2 * drift > min(width, height):
            raise ValueError(f"face_scale {face_scale} too large for a {width}x{height} frame")
        work = min(size, WARP_SIZE)
        crop, source = base_face(work, mirror)
        neutral = alignment.mean_neutral_shape(work).astype(np.float64)
        iod = float(landmarks.inter_ocular_distance(neutral))
        shapes = neutral[None] + action_units.expression_path(kind, num_frames, fps, seed) * iod
        shapes = _similarity(shapes, head_motion(num_frames, seed), iod)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # JAX's notes on fork in later subprocesses
            crops = np.asarray(warp.warp_sequence(crop, source, shapes.astype(np.float32)))
        if size != work:
            # PIL maps pixel centres: x_out + 0.5 = (x_in + 0.5) * size / work.
            crops = np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in crops])
            shapes = (shapes + 0.5) * (size / work) - 0.5
        rng = np.random.default_rng([seed, 15485863])
        room = np.array([width - size, height - size], np.float64)
        start = np.round(0.5 * room + rng.uniform(-0.2, 0.2, size=2) * (room - 2 * drift)).astype(int)
        offsets = start + np.round(drift * action_units.random_wiggle(rng, num_frames, 2)).astype(int)
        self.offsets = np.clip(offsets, 0, room.astype(int))
        self.crops, self.size = crops, size
        self.points = (shapes + self.offsets[:, None, :]).astype(np.float32)
        self.background = background(self.frame_size, seed)

    def __len__(self) -> int:
        return len(self.crops)

    def frame(self, t: int) -> np.ndarray:
        alpha = _alpha(self.size)
        x, y = self.offsets[t]
        frame = self.background.copy()
        region = frame[y:y + self.size, x:x + self.size].astype(np.float32)
        blended = alpha * self.crops[t].astype(np.float32) + (1.0 - alpha) * region
        frame[y:y + self.size, x:x + self.size] = np.round(blended).astype(np.uint8)
        return frame

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self.frame(t)


def faceless_sequence(num_frames: int, frame_size: tuple[int, int], seed: int = 0) -> Iterator[np.ndarray]:
    """A scene without a face (scikit-image's coffee cup, slowly panning). Yields uint8 (H, W, 3)."""
    width, height = _check_frame_size(frame_size)
    pan = 8
    scene = Image.fromarray(data.coffee())
    scale = max((width + 2 * pan) / scene.width, (height + 2 * pan) / scene.height)
    scene = np.asarray(scene.resize((int(np.ceil(scene.width * scale)), int(np.ceil(scene.height * scale))),
                                    Image.BILINEAR))
    shifts = np.round(pan * action_units.random_wiggle(np.random.default_rng([seed, 2]), num_frames, 2)).astype(int)
    x0, y0 = (scene.shape[1] - width) // 2, (scene.shape[0] - height) // 2
    for dx, dy in shifts:
        yield scene[y0 + dy:y0 + dy + height, x0 + dx:x0 + dx + width]


# ---------------------------------------------------------------------------
# Writing


def write_jpgs(folder: str, frames) -> int:
    """img_0000.jpg, img_0001.jpg, ... of uint8 frames in `folder` (made). Returns the count."""
    os.makedirs(folder, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, 1):
        Image.fromarray(np.asarray(frame, np.uint8)).save(
            os.path.join(folder, f"img_{count - 1:04d}.jpg"), quality=JPEG_QUALITY)
    return count


def _truncate(path: str, keep: float = 1.0 / 3.0) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.truncate(max(1, int(size * keep)))


def _subject_seed(subject: str) -> int:
    return int(subject) if subject.isdigit() else zlib.crc32(subject.encode())


def _video_seed(seed: int, subject: str, kind: str, take: int) -> int:
    """One seed per video, from (seed, subject, kind, take) only."""
    sequence = np.random.SeedSequence([seed, _subject_seed(subject), action_units.KINDS.index(kind), take])
    return int(sequence.generate_state(1)[0])


def _subject_options(subjects: Sequence[str]) -> dict[str, bool]:
    """Every other subject is the mirrored astronaut."""
    return {subject: bool(i % 2) for i, subject in enumerate(subjects)}


def make_uva_nemo(
    root: str,
    subjects: Sequence[str] = ("001", "002"),
    takes: int = 1,
    num_frames: int = 40,
    frame_size: tuple[int, int] = (640, 360),
    corrupt: bool = True,
    faceless: bool = True,
    seed: int = 0,
) -> dict:
    """A fake UvA-NEMO in `root`: ROOT/NNN_{deliberate,spontaneous}_smile_K.mp4 at 50 fps.

    Each subject gets `takes` deliberate (posed) and `takes` spontaneous
    smiles, K = 1..takes. corrupt: also the first subject's deliberate take
    takes + 1, cut to a third of its bytes (ffmpeg cannot open it: the moov
    atom is at the end). faceless: also its spontaneous take takes + 1, a
    coffee-cup scene of the same size and length.

    Returns {"targets": {stem: float32 (T, 68, 2) frame pixels} (good videos),
    "labels": {stem: "posed" | "spontaneous"} (every video written),
    "corrupt": [stem], "faceless": [stem], "fps": 50}; stem = file name
    without ".mp4".
    """
    os.makedirs(root, exist_ok=True)
    mirror = _subject_options(subjects)
    result = dict(targets={}, labels={}, corrupt=[], faceless=[], fps=UVA_NEMO_FPS)
    file_class = {"posed": "deliberate", "spontaneous": "spontaneous"}
    for subject in subjects:
        for kind in action_units.SMILE_KINDS:
            for take in range(1, takes + 1):
                stem = f"{subject}_{file_class[kind]}_smile_{take}"
                sequence = _Sequence(kind, num_frames, frame_size, UVA_NEMO_FPS,
                                     _video_seed(seed, subject, kind, take), None, mirror[subject])
                files.write_mp4(os.path.join(root, stem + ".mp4"), sequence.frames(), UVA_NEMO_FPS, MP4_CRF)
                result["targets"][stem] = sequence.points
                result["labels"][stem] = kind
    if subjects and corrupt:
        stem = f"{subjects[0]}_deliberate_smile_{takes + 1}"
        path = os.path.join(root, stem + ".mp4")
        sequence = _Sequence("posed", num_frames, frame_size, UVA_NEMO_FPS,
                             _video_seed(seed, subjects[0], "posed", takes + 1), None, False)
        files.write_mp4(path, sequence.frames(), UVA_NEMO_FPS, MP4_CRF)
        _truncate(path)
        result["labels"][stem] = "posed"
        result["corrupt"].append(stem)
    if subjects and faceless:
        stem = f"{subjects[0]}_spontaneous_smile_{takes + 1}"
        files.write_mp4(os.path.join(root, stem + ".mp4"), faceless_sequence(num_frames, frame_size, seed),
                        UVA_NEMO_FPS, MP4_CRF)
        result["labels"][stem] = "spontaneous"
        result["faceless"].append(stem)
    return result


def make_mug(
    root: str,
    subjects: Sequence[str] = ("001", "002"),
    emotions: Sequence[str] = ("happiness", "surprise"),
    include_neutral: bool = False,
    takes: int = 1,
    num_frames: int = 24,
    frame_size: tuple[int, int] = (320, 320),
    corrupt: bool = True,
    faceless: bool = True,
    seed: int = 0,
) -> dict:
    """A fake MUG in `root`: ROOT/subjects3/NNN/<emotion>/takeNNN/img_XXXX.jpg (19 fps).

    Each subject gets `takes` takes (take000 ...) of each emotion (and of
    "neutral" with include_neutral). corrupt: also the first subject's first
    emotion, take number `takes`, all of whose jpgs are cut to a third of
    their bytes (Pillow fails on load). faceless: also its take `takes + 1`,
    coffee-cup images.

    Returns {"targets": {video_id: float32 (T, 68, 2)} (good takes),
    "labels": {video_id: emotion} (every take written), "corrupt": [video_id],
    "faceless": [video_id], "fps": 19}; video_id = "NNN/<emotion>/takeNNN".
    """
    emotions = tuple(emotions) + (("neutral",) if include_neutral and "neutral" not in emotions else ())
    for emotion in emotions:
        if emotion not in action_units.KINDS:
            raise ValueError(
                f"unknown emotion {emotion!r}; expected one of {action_units.MUG_EMOTIONS + ('neutral',)}")
    base = os.path.join(root, "subjects3")
    mirror = _subject_options(subjects)
    result = dict(targets={}, labels={}, corrupt=[], faceless=[], fps=MUG_FPS)
    for subject in subjects:
        for emotion in emotions:
            for take in range(takes):
                video = f"{subject}/{emotion}/take{take:03d}"
                sequence = _Sequence(emotion, num_frames, frame_size, MUG_FPS,
                                     _video_seed(seed, subject, emotion, take), None, mirror[subject])
                write_jpgs(os.path.join(base, video), sequence.frames())
                result["targets"][video] = sequence.points
                result["labels"][video] = emotion
    if subjects and emotions and corrupt:
        video = f"{subjects[0]}/{emotions[0]}/take{takes:03d}"
        sequence = _Sequence(emotions[0], num_frames, frame_size, MUG_FPS,
                             _video_seed(seed, subjects[0], emotions[0], takes), None, False)
        folder = os.path.join(base, video)
        write_jpgs(folder, sequence.frames())
        for name in os.listdir(folder):
            _truncate(os.path.join(folder, name))
        result["labels"][video] = emotions[0]
        result["corrupt"].append(video)
    if subjects and emotions and faceless:
        video = f"{subjects[0]}/{emotions[0]}/take{takes + 1:03d}"
        write_jpgs(os.path.join(base, video), faceless_sequence(num_frames, frame_size, seed))
        result["labels"][video] = emotions[0]
        result["faceless"].append(video)
    return result


def benchmark_video(
    path: str,
    num_frames: int = 100,
    frame_size: tuple[int, int] = (1920, 1080),
    fps: float = UVA_NEMO_FPS,
    kind: str = "spontaneous",
    seed: int = 0,
) -> np.ndarray:
    """One full-HD fake smile mp4 at `path`, the face as big as in UvA-NEMO.

    The outer eye corners are a quarter of the frame height apart (270 px at
    1080p, a dlib face box of about 400 px). Frames are encoded as they are
    drawn (`files.write_mp4`), not held in memory. Returns the known points float32 (T, 68, 2).
    """
    sequence = _Sequence(kind, num_frames, frame_size, fps, seed, None, False)
    files.write_mp4(path, sequence.frames(), fps, MP4_CRF)
    return sequence.points


# ---------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmm_jax.data.fake",
        description="Write a tiny fake copy of UvA-NEMO or MUG (same layout, astronaut face, known landmarks).")
    parser.add_argument("--dataset", required=True, choices=("uva_nemo", "mug"))
    parser.add_argument("--out", required=True, help="root folder to write")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects (ids 001, 002, ...)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default 40 UvA-NEMO, 24 MUG)")
    parser.add_argument("--takes", type=int, default=1, help="takes per subject and class/emotion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-corrupt", dest="corrupt", action="store_false", help="no corrupt video")
    parser.add_argument("--no-faceless", dest="faceless", action="store_false", help="no face-less video")
    args = parser.parse_args(argv)
    subjects = tuple(f"{i:03d}" for i in range(1, args.subjects + 1))
    options = dict(subjects=subjects, takes=args.takes, corrupt=args.corrupt, faceless=args.faceless, seed=args.seed)
    if args.frames is not None:
        options["num_frames"] = args.frames
    start = time.perf_counter()
    if args.dataset == "uva_nemo":
        result = make_uva_nemo(args.out, **options)
    else:
        result = make_mug(args.out, emotions=action_units.MUG_EMOTIONS, include_neutral=True, **options)
    counts = {label: list(result["labels"].values()).count(label) for label in sorted(set(result["labels"].values()))}
    print(f"fake {args.dataset}: {len(result['labels'])} videos ({len(result['targets'])} good, "
          f"{len(result['corrupt'])} corrupt, {len(result['faceless'])} face-less) of {len(subjects)} subjects "
          f"at {result['fps']} fps in {args.out}; per label {counts}; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
