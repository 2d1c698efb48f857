"""Face videos -> aligned landmark clips: the preprocessing of UvA-NEMO and MUG.

One video (an mp4 file or a folder of numbered images) becomes one clip of
`num_frames` frames at `fps`, starting at the video's first (neutral) frame:

1. decode with ffmpeg (imageio-ffmpeg), subsampled to `fps` and shrunk to at
   most `max_side` pixels by ffmpeg itself;
2. detect the face in the first frame (dlib HOG) and TRACK it: each later
   frame's 68 points are fitted in a box derived from the previous frame's
   points; the detector runs again only every `detect_every` frames or when
   the fit degrades (its points drift from the box they were fitted in, or the
   shape stops looking like a face), and then only around the last position;
3. optionally smooth the points over time (Gaussian, `smooth_sigma` frames);
4. align: the similarity that maps the FIRST frame's eye corners and nose tip
   onto the template (`alignment.alignment_matrix`) crops every frame, so head
   motion stays in the data (BUILD.md "Preprocessing").

`preprocess_videos` runs that over many videos in parallel processes and is
resumable: each finished video is one `.npz` in a cache folder (written
atomically), each video that cannot be used (corrupt, truncated, no face, too
short) one `.failed.json` with the reason; a re-run skips both. A report
lists what was skipped. Nothing here needs JAX.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from typing import Iterator, Sequence

import imageio_ffmpeg
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from cmm_jax import alignment, face, files, landmarks

# imageio-ffmpeg warns on every video that we shrink on decoding, on purpose.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


@dataclasses.dataclass(frozen=True)
class Video:
    """One input video: an mp4 file, or a folder of numbered images at `fps`."""

    id: str  # unique within a dataset, e.g. "001_deliberate_smile_1" or "001/happiness/take000"
    path: str
    label: str
    subject: str
    fps: float = 0.0  # frame rate of an image folder (read from the file for videos)


@dataclasses.dataclass(frozen=True)
class Options:
    """How a video becomes a clip. Every field changes the records."""

    num_frames: int = 32
    fps: float = 10.0  # clip frame rate; the source is subsampled to it
    image_size: int = 64  # aligned crop size
    detect_every: int = 0  # also re-detect every N clip frames (0: only when the fit degrades; 1: every frame)
    smooth_sigma: float = 0.0  # temporal Gaussian on the points, in clip frames (0: off)
    min_frames: int = 16  # shorter videos are skipped; longer ones shorter than num_frames hold their last frame
    max_side: int = 960  # frames are decoded at most this large (long side): dlib and 64x64 crops need no more


class VideoError(ValueError):
    """A video that cannot be used: unreadable, truncated, face-less or too short."""


# ---------------------------------------------------------------------------
# Decoding


class Frames:
    """The frames of a video at options.fps, uint8 (H, W, 3), at most num_frames,
    decoded at most options.max_side large. Iterate once.

    `scale` is the decoded size over the source size (known once the first
    frame is read). Iterating raises VideoError when the file cannot be decoded.
    """

    def __init__(self, video: Video, options: Options):
        self.video = video
        self.options = options
        self.scale = 1.0

    def __iter__(self) -> Iterator[np.ndarray]:
        if os.path.isdir(self.video.path):
            return self._image_folder()
        return self._video_file()

    def _video_file(self) -> Iterator[np.ndarray]:
        video, options = self.video, self.options
        if not os.path.isfile(video.path):
            raise VideoError(f"missing file {video.path}")
        # ffmpeg's fps filter picks, for each tick of the clip rate, the
        # nearest source frame (the first clip frame is the first source
        # frame); the scale filter shrinks large frames (area averaging, even sizes).
        shrink = f"min(1\\,{options.max_side}/max(iw\\,ih))"
        filters = f"fps={options.fps:g},scale=trunc(iw*{shrink}/2)*2:trunc(ih*{shrink}/2)*2:flags=area"
        reader = imageio_ffmpeg.read_frames(video.path, output_params=["-vf", filters])
        try:
            try:
                with files.ffmpeg_subprocess():
                    meta = next(reader)
            except (RuntimeError, OSError, StopIteration) as e:
                raise VideoError(f"cannot decode: {_first_line(e)}") from e
            width, height = meta["size"]
            self.scale = width / meta["source_size"][0]
            count = 0
            while count < options.num_frames:
                try:
                    data = next(reader)
                except StopIteration:
                    break
                except (RuntimeError, OSError) as e:
                    raise VideoError(f"decoding failed after {count} frames: {_first_line(e)}") from e
                count += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            reader.close()  # stops ffmpeg when we have enough frames

    def _image_folder(self) -> Iterator[np.ndarray]:
        video, options = self.video, self.options
        files = image_files(video.path)
        if not files:
            raise VideoError("no images")
        step = video.fps / options.fps if video.fps > 0 else 1.0
        indices = sorted({int(round(k * step)) for k in range(options.num_frames)})
        for count, index in enumerate(i for i in indices if i < len(files)):
            try:
                with Image.open(files[index]) as image:
                    image.load()  # truncated files fail here
                    image = image.convert("RGB")
                    factor = int(np.ceil(max(image.size) / options.max_side))
                    if factor > 1:
                        image = image.reduce(factor)
                    self.scale = 1.0 / factor
                    yield np.asarray(image)
            except OSError as e:  # PIL's UnidentifiedImageError is an OSError
                raise VideoError(
                    f"cannot decode {os.path.basename(files[index])} (frame {count}): {_first_line(e)}"
                ) from e


_IMAGE_NUMBER = re.compile(r"(\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)


def image_files(folder: str) -> list[str]:
    """The numbered images of a folder, in frame order."""
    files = [f for f in glob.glob(os.path.join(folder, "*")) if _IMAGE_NUMBER.search(f)]
    return sorted(files, key=lambda f: int(_IMAGE_NUMBER.search(f).group(1)))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------
# Tracking


def _bounding_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(0), points.max(0)]).astype(np.float64)


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def shape_residual(points: np.ndarray) -> float:
    """How little a fit looks like a face: mean distance of its points from
    the template after the best similarity, in inter-ocular distances."""
    template = alignment.mean_neutral_shape(landmarks.CROP_SIZE)
    matrix = landmarks.fit_similarity(points, template)
    aligned = landmarks.apply_affine(matrix, points)
    return float(landmarks.point_error(aligned, template).mean() / landmarks.inter_ocular_distance(template))


PATCH_SIZE = 32
_PATCH_GRID = np.stack(np.meshgrid(np.arange(PATCH_SIZE), np.arange(PATCH_SIZE)), -1).reshape(-1, 2).astype(np.float64)


def face_patch(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A small gray face patch, aligned by all 68 points, mean 0 and norm 1 (PATCH_SIZE**2,).

    Nearest-pixel samples: a few microseconds on any frame size."""
    to_frame = landmarks.fit_similarity(alignment.mean_neutral_shape(PATCH_SIZE), points)
    grid = landmarks.apply_affine(to_frame, _PATCH_GRID)
    x = np.clip(np.round(grid[:, 0]).astype(int), 0, frame.shape[1] - 1)
    y = np.clip(np.round(grid[:, 1]).astype(int), 0, frame.shape[0] - 1)
    values = frame[y, x].astype(np.float64).mean(-1)
    values -= values.mean()
    return values / (np.linalg.norm(values) + 1e-9)


class Tracker:
    """68 points per frame: detect once, then track.

    The detector's box on the first frame is remembered relative to the
    bounding box of its 68 points; each later frame is fitted in the same
    relative box around the previous frame's points. The detector runs again
    (near the last position) every `detect_every` frames, and whenever the fit
    degrades (near the last position, then on the whole frame): the new
    points' box overlaps the box they were fitted in by less than MIN_IOU
    (the face moved more than the fit followed), the shape is no
    longer face-like (shape_residual > MAX_RESIDUAL), or the image under the
    points no longer looks like the first frame's face (correlation of
    `face_patch`es < MIN_SIMILARITY: the fit stayed where the face was). On the
    fake copies a face through any expression keeps >= 0.86, a fit 150 px away
    from it <= 0.03.
    """

    MIN_IOU = 0.7
    MAX_RESIDUAL = 0.15
    MIN_SIMILARITY = 0.5
    SEARCH_MARGIN = 0.75  # re-detection looks this many box sizes around the last box

    def __init__(self, detect_every: int = 0):
        self.detect_every = detect_every
        self.detections = 0
        self.frames = 0
        self._relative_box = None  # detector box in units of the points' box
        self._points = None
        self._reference = None  # the first frame's face_patch

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The frame's 68 points, float32 (68, 2). Raises face.NoFaceError
        when the first frame has no face."""
        self.frames += 1
        if self._points is None:
            return self._detect(frame, frame_wide=True)
        if self.detect_every and (self.frames - 1) % self.detect_every == 0:
            try:
                return self._detect(frame, frame_wide=self.detect_every == 1)
            except face.NoFaceError:
                pass  # (blur, a hand, a turned head) track this frame instead
        box = self._box_from(self._points)
        points = face.detect_landmarks(frame, box)
        if (
            _iou(box, self._box_from(points)) < self.MIN_IOU
            or shape_residual(points) > self.MAX_RESIDUAL
            or float(self._reference @ face_patch(frame, points)) < self.MIN_SIMILARITY
        ):
            for frame_wide in (False, True):  # near the last face, then anywhere
                try:
                    return self._detect(frame, frame_wide=frame_wide)
                except face.NoFaceError:
                    pass
            # No face found: keep the tracked fit; the next frame tries again.
        self._points = points
        return points

    def _box_from(self, points: np.ndarray) -> np.ndarray:
        box = _bounding_box(points)
        size = box[2:] - box[:2]
        return np.concatenate([box[:2] + self._relative_box[:2] * size, box[2:] + self._relative_box[2:] * size])

    def _detect(self, frame: np.ndarray, frame_wide: bool = False) -> np.ndarray:
        self.detections += 1
        offset = np.zeros(2)
        region = frame
        if not frame_wide:  # search near the last face only
            box = self._box_from(self._points)
            margin = self.SEARCH_MARGIN * (box[2:] - box[:2])
            height, width = frame.shape[:2]
            x0, y0 = np.maximum(np.floor(box[:2] - margin), 0).astype(int)
            x1, y1 = np.minimum(np.ceil(box[2:] + margin), [width, height]).astype(int)
            region = frame[y0:y1, x0:x1]
            offset = np.array([x0, y0], np.float64)
        fit = face.find_face(region)  # raises NoFaceError
        box = np.asarray(fit.box, np.float64) + np.tile(offset, 2)
        points = (fit.points + offset).astype(np.float32)
        if self._relative_box is None:  # the first detection sets the box shape and the reference
            self._reference = face_patch(frame, points)
            points_box = _bounding_box(points)
            size = points_box[2:] - points_box[:2]
            self._relative_box = np.concatenate(
                [(box[:2] - points_box[:2]) / size, (box[2:] - points_box[2:]) / size]
            )
        self._points = points
        return points


# ---------------------------------------------------------------------------
# One video


def smooth(points: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of (T, 68, 2) points over time (edges held)."""
    if sigma <= 0 or len(points) < 2:
        return points
    return gaussian_filter1d(points.astype(np.float64), sigma, axis=0, mode="nearest").astype(np.float32)


def process_video(video: Video, options: Options) -> dict:
    """One video -> {"frames" uint8 (T, S, S, 3), "landmarks" float32 (T, 68, 2)
    in crop pixels, "num_source_frames", "detections", "matrix" (2, 3)}.

    Raises VideoError for a video that cannot be used.
    """
    tracker = Tracker(options.detect_every)
    frames, points = [], []
    decoded = Frames(video, options)
    for frame in decoded:
        try:
            points.append(tracker(frame))
        except face.NoFaceError as e:
            raise VideoError("no face in the first frame") from e
        frames.append(frame)
    if len(frames) < options.min_frames:
        raise VideoError(f"too short: {len(frames)} frames at {options.fps:g} fps, fewer than {options.min_frames}")
    points = smooth(np.stack(points), options.smooth_sigma)
    matrix = alignment.alignment_matrix(points[0], options.image_size)
    crops = np.stack([alignment.warp_to_crop(f, matrix, options.image_size) for f in frames])
    crop_points = landmarks.apply_affine(matrix, points).astype(np.float32)
    num_source = len(frames)
    if num_source < options.num_frames:  # hold the last frame
        pad = options.num_frames - num_source
        crops = np.concatenate([crops, np.repeat(crops[-1:], pad, 0)])
        crop_points = np.concatenate([crop_points, np.repeat(crop_points[-1:], pad, 0)])
    return {
        "frames": crops,
        "landmarks": crop_points,
        "num_source_frames": num_source,
        "detections": tracker.detections,
        # Source (full-size) frame pixels -> crop pixels.
        "matrix": (matrix @ np.diag([decoded.scale, decoded.scale, 1.0])).astype(np.float32),
    }


# ---------------------------------------------------------------------------
# Many videos, resumable


def cache_name(video_id: str) -> str:
    """A file-name-safe version of a video id."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", video_id)


def result_path(cache_dir: str, video_id: str) -> str:
    return os.path.join(cache_dir, cache_name(video_id) + ".npz")


def failure_path(cache_dir: str, video_id: str) -> str:
    return os.path.join(cache_dir, cache_name(video_id) + ".failed.json")


def _run_one(video: Video, options: Options, cache_dir: str) -> tuple[str, str | None, int, float]:
    """Worker: process one video, write its .npz or .failed.json.

    Returns (video id, failure reason or None, clip frames, seconds)."""
    start = time.perf_counter()
    try:
        result = process_video(video, options)
    except VideoError as e:
        reason = str(e)
        payload = json.dumps({"video": video.id, "path": video.path, "reason": reason}).encode()
        files.write_bytes_atomically(failure_path(cache_dir, video.id), payload)
        return video.id, reason, 0, time.perf_counter() - start
    files.write_atomically(result_path(cache_dir, video.id), lambda temporary: np.savez(temporary, **result))
    return video.id, None, result["num_source_frames"], time.perf_counter() - start


@dataclasses.dataclass
class Report:
    """What preprocess_videos did: counts, failures with reasons, speed."""

    total: int = 0
    done_before: int = 0  # finished (or failed) in an earlier run, skipped now
    processed: int = 0
    frames: int = 0
    seconds: float = 0.0
    failed: dict = dataclasses.field(default_factory=dict)  # video id -> reason (all runs)
    padded: list = dataclasses.field(default_factory=list)  # held their last frame

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.total} videos: {self.total - len(self.failed)} usable, {len(self.failed)} skipped; "
            f"{self.processed} preprocessed now ({self.frames} frames, {self.frames_per_second:.1f} frames/s), "
            f"{self.done_before} done before"
        )

    def to_json(self) -> dict:
        return {
            "videos": self.total,
            "usable": self.total - len(self.failed),
            "skipped": [{"video": k, "reason": v} for k, v in sorted(self.failed.items())],
            "padded": sorted(self.padded),
            "processed_this_run": self.processed,
            "done_before": self.done_before,
            "frames_this_run": self.frames,
            "frames_per_second": round(self.frames_per_second, 2),
        }


def _mp_context():
    # Workers start fresh ("spawn"): forking a process that holds threads
    # (JAX, TFDS, grain) can deadlock.
    return multiprocessing.get_context("spawn")


def preprocess_videos(
    videos: Sequence[Video],
    cache_dir: str,
    options: Options,
    workers: int = 0,
    progress: bool = True,
    description: str = "preprocess",
) -> Report:
    """Preprocess every video not yet in cache_dir; returns the Report (all videos).

    workers: processes (0: one per CPU core; 1: in this process). Writes
    cache_dir/report.json too. An interrupted run leaves only whole files, so
    running again finishes the rest.
    """
    ids = [v.id for v in videos]
    if len(set(ids)) != len(ids):
        raise ValueError("video ids must be unique")
    os.makedirs(cache_dir, exist_ok=True)
    _write_options(cache_dir, options)
    for name in os.listdir(cache_dir):  # half-written files of a killed run (one run per cache at a time)
        if files.TEMPORARY.match(name):
            os.remove(os.path.join(cache_dir, name))
    report = Report(total=len(videos))
    todo = []
    for video in videos:
        if os.path.exists(result_path(cache_dir, video.id)):
            report.done_before += 1
        elif os.path.exists(failure_path(cache_dir, video.id)):
            report.done_before += 1
        else:
            todo.append(video)
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    if progress:
        print(
            f"{description}: {len(videos)} videos, {report.done_before} done before, "
            f"{len(todo)} to go on {workers} process{'es' if workers > 1 else ''}",
            file=sys.stderr,
        )
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", desc=description, disable=not progress or not todo)

    def record(outcome):
        _, reason, frames, _ = outcome
        report.processed += 1
        report.frames += frames
        report.seconds = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix_str(f"{report.frames_per_second:.1f} frames/s")

    try:
        if workers == 1:
            for video in todo:
                record(_run_one(video, options, cache_dir))
        else:
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_mp_context()) as pool:
                futures = [pool.submit(_run_one, v, options, cache_dir) for v in todo]
                try:
                    for future in concurrent.futures.as_completed(futures):
                        record(future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()

    # The report covers every video, this run's and earlier runs'.
    for video in videos:
        failed = failure_path(cache_dir, video.id)
        if os.path.exists(failed):
            with open(failed) as f:
                report.failed[video.id] = json.load(f)["reason"]
        else:
            with np.load(result_path(cache_dir, video.id)) as result:
                if int(result["num_source_frames"]) < options.num_frames:
                    report.padded.append(video.id)
    files.write_json(os.path.join(cache_dir, "report.json"), report.to_json())
    if progress:
        print(f"{description}: {report.summary()}", file=sys.stderr)
        for video_id, reason in sorted(report.failed.items()):
            print(f"  skipped {video_id}: {reason}", file=sys.stderr)
    return report


def _write_options(cache_dir: str, options: Options) -> None:
    """Remember the options a cache was made with; refuse to mix two."""
    path = os.path.join(cache_dir, "options.json")
    wanted = dataclasses.asdict(options)
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)
        if found != wanted:
            raise ValueError(
                f"{cache_dir} holds videos preprocessed with other options ({found}); "
                f"use another folder or delete it"
            )
        return
    files.write_json(path, wanted)


def load_result(cache_dir: str, video_id: str) -> dict:
    """A preprocessed video's arrays (frames, landmarks)."""
    with np.load(result_path(cache_dir, video_id)) as result:
        return {"frames": result["frames"], "landmarks": result["landmarks"]}
