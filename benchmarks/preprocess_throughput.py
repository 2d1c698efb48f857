"""Preprocessing speed: detect once and track, against detecting in every frame.

  python -m benchmarks.preprocess_throughput [--num_frames=100] [--repeats=3] [--json=PATH]

Writes one 1920x1080, 50 fps fake smile video (cmm_jax.data.fake: a real face
photo warped along known landmark paths, the face as large as in UvA-NEMO),
then runs the whole per-video preprocessing (`cmm_jax.data.preprocess.process_video`:
ffmpeg decoding, dlib, alignment, 64x64 crops) on every frame of it twice in
this process:
- track: the face is detected in the first frame, then tracked (our default,
  detect_every=0: the detector runs again only when the fit degrades);
- per-frame detection: detect_every=1, the detector on every frame.
Prints frames/s of each, their ratio, the detector calls, and the landmark
error of each against the known points (NME, inter-ocular units), so speed
is never bought with accuracy. dlib's model files are loaded before timing.
Then the default clip (32 frames at 10 fps from a 3.4 s, 170-frame 1080p video,
ffmpeg decoding all 50 fps frames): seconds per video, and what that makes
1240 UvA-NEMO videos on this machine's cores.
Median of --repeats runs (--json also writes them). Numbers belong in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

from cmm_jax import face, files, landmarks
from cmm_jax.data import fake, preprocess

_FRAMES = flags.DEFINE_integer("num_frames", 100, "Frames of the 50 fps test video (all processed).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per mode; the median is reported.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON.")


def main(argv):
    del argv
    face.detector(), face.shape_predictor()  # load dlib's models untimed
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "001_spontaneous_smile_1.mp4")
        targets = fake.benchmark_video(path, num_frames=_FRAMES.value)
        video = preprocess.Video(id="bench", path=path, label="spontaneous", subject="001")
        rows = {}
        for name, detect_every in (("track", 0), ("per-frame detection", 1)):
            options = preprocess.Options(
                num_frames=_FRAMES.value, fps=fake.UVA_NEMO_FPS, detect_every=detect_every, min_frames=1
            )
            times = []
            for _ in range(_REPEATS.value):
                start = time.perf_counter()
                result = preprocess.process_video(video, options)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            frames = int(result["num_source_frames"])
            known = landmarks.apply_affine(result["matrix"].astype(np.float64), targets[:frames])
            nme = landmarks.point_error(result["landmarks"][:frames], known).mean() / landmarks.inter_ocular_distance(known[0])
            rows[name] = (frames / seconds, int(result["detections"]), float(nme), frames)
    print(f"1920x1080 fake smile, {_FRAMES.value} frames at 50 fps, 64x64 crops, one process "
          f"(median of {_REPEATS.value}):")
    for name, (fps, detections, nme, frames) in rows.items():
        print(f"  {name:20s} {fps:7.1f} frames/s  detector calls {detections:3d}/{frames}  NME {nme:.4f}")
    ratio = rows["track"][0] / rows["per-frame detection"][0]
    print(f"  track / per-frame detection: {ratio:.1f}x")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "001_spontaneous_smile_1.mp4")
        fake.benchmark_video(path, num_frames=170)
        video = preprocess.Video(id="clip", path=path, label="spontaneous", subject="001")
        times = []
        for _ in range(_REPEATS.value):
            start = time.perf_counter()
            preprocess.process_video(video, preprocess.Options())
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    cores = os.cpu_count() or 1
    print(f"default clip (32 frames at 10 fps of a 170-frame 1080p video): {seconds:.2f} s per video; "
          f"1240 videos on {cores} worker process(es): ~{1240 * seconds / cores / 60:.0f} min")
    if _JSON.value:
        files.write_json(_JSON.value, {
            "num_frames": _FRAMES.value, "repeats": _REPEATS.value,
            "modes": {name: {"frames_per_s": fps, "detector_calls": detections, "frames": frames, "nme": nme}
                      for name, (fps, detections, nme, frames) in rows.items()},
            "ratio": ratio, "clip_s": seconds, "cores": cores,
        }, indent=1)


if __name__ == "__main__":
    app.run(main)
