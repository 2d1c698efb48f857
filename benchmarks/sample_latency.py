"""Sampling latency: one photo -> K videos, and the JAX warp against scikit-image.

  python -m benchmarks.sample_latency [--workdir=runs/smile] [--num_modes=5] [--repeats=5] [--json=PATH]

Times, after one warm-up call each (compilation, model loading and dlib's
model files are not counted):
- the JAX piecewise-affine warp (`cmm_jax.warp.warp_sequence`, jit) drawing
  K x T frames of 64x64, as by default (the mouth's inside and the smile's
  folds) and bare (`mouth_interior=False, smile_folds=False`), against scikit-image's
  PiecewiseAffineTransform + warp drawing the same frames one by one (same
  points, same border points, nothing drawn), and their ratios; then the
  JAX warp of the same paths at 256x256 (the sampling default);
- with --workdir (a trained run): the whole of `python -m cmm_jax.sample`'s
  work for one photo, split into face finding + alignment (dlib), landmark
  generation, rendering (warp, and translator when the run has one), writing
  the files; for the warp at the command line's default (256 px with the
  paste-back videos) also the same for a real portrait (Grace Hopper's,
  whose lips fold the mesh in some frames and whose face fills more of the
  photo), each file's part, timed alone, and the CPU time of
  the whole call (every thread of this process, the encoders' included, and
  any child process, from getrusage), against which two cores give the least
  wall time.
Median of --repeats runs (--json also writes them, in seconds). Numbers
depend on the machine: they belong in benchmarks/RESULTS.md, never in tests.
"""

from __future__ import annotations

import os

# scikit-image's PiecewiseAffineTransform solves one tiny system per triangle;
# OpenBLAS threads only add waiting to it (3-8x slower on two busy cores), so
# it gets one unless the caller says otherwise. JAX (XLA) does not use OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib  # noqa: E402
import io  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from skimage import transform  # noqa: E402

from cmm_jax import alignment, compositing, face, files, landmarks, run_dir, sample, visualize, warp  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (optional): times the whole sampling.")
_MODES = flags.DEFINE_integer("num_modes", 5, "Videos per photo.")
_FRAMES = flags.DEFINE_integer("num_frames", 32, "Frames per video (warp comparison).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs; the median is reported.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON.")


# Grace Hopper's portrait (public domain; tests/data/README.md), 512x600: the astronaut's
# mesh never folds and her face fills little of her photo, which makes hers the easy case.
PORTRAIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                        "grace_hopper.jpg")
PORTRAIT_STEP = "whole, 256 px + paste-back: Grace Hopper's portrait"


def _median_seconds(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median over `repeats` calls of fn() after a warm-up call, in seconds of `clock`."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _cpu_seconds() -> float:
    """CPU seconds so far (user + system) of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _astronaut(size: int = landmarks.CROP_SIZE):
    """The photo, its aligned size x size crop and the face's 68 points in crop pixels."""
    image = files.astronaut()
    points = face.find_face(image).points
    matrix = alignment.alignment_matrix(points, size)
    return image, alignment.warp_to_crop(image, matrix, size), landmarks.apply_affine(matrix, points).astype(np.float32)


def _smile_paths(neutral, num_sequences, num_frames):
    """Mouth corners out and up, jaw slightly down: (K, T, 68, 2)."""
    rng = np.random.default_rng(0)
    progress = np.sin(np.linspace(0, np.pi, num_frames))[:, None, None]
    paths = []
    for _ in range(num_sequences):
        move = np.zeros((68, 2), np.float32)
        move[48] = (-rng.uniform(1, 3), -rng.uniform(0, 1.5))
        move[54] = (rng.uniform(1, 3), -rng.uniform(0, 1.5))
        move[56:59, 1] = rng.uniform(0, 2)
        paths.append(neutral + progress * move)
    return np.stack(paths).astype(np.float32)


def _skimage_warp(crop, source_points, sequences):
    border = warp.border_points(crop.shape[0])
    source = np.concatenate([source_points, border])
    frames = []
    for target in sequences.reshape(-1, 68, 2):
        mapping = transform.PiecewiseAffineTransform.from_estimate(np.concatenate([target, border]), source)
        frames.append(transform.warp(crop, mapping, order=1, preserve_range=True, mode="edge"))
    return np.stack(frames)


def _warp_seconds(crop, points, sequences, drawn: bool) -> float:
    """Median seconds of one `warp_sequence` call over all the sequences; drawn:
    the mouth interior and the smile folds (the default), else the bare warp."""
    return _median_seconds(
        lambda: jax.block_until_ready(
            warp.warp_sequence(crop, points, sequences, mouth_interior=drawn, smile_folds=drawn)),
        _REPEATS.value,
    )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    image, crop, points = _astronaut()
    sequences = _smile_paths(points, _MODES.value, _FRAMES.value)
    frames = sequences.shape[0] * sequences.shape[1]
    jax_seconds = _warp_seconds(crop, points, sequences, True)
    bare_seconds = _warp_seconds(crop, points, sequences, False)
    skimage_seconds = _median_seconds(lambda: _skimage_warp(crop, points, sequences), max(1, _REPEATS.value // 2))
    _, crop_256, points_256 = _astronaut(256)
    scale = 256 / crop.shape[0]
    large_seconds = _warp_seconds(crop_256, points_256, points_256 + (sequences - points) * scale, True)

    def line(name, seconds):
        return f"  {name:<40} {seconds * 1e3:8.1f} ms  ({seconds / frames * 1e3:.3f} ms/frame)"

    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}")
    print(f"{frames} frames of 64x64 ({_MODES.value} videos x {_FRAMES.value} frames)")
    print(line("JAX warp (jit), default:", jax_seconds))
    print(line("JAX warp (jit), bare:", bare_seconds))
    print(line("scikit-image PiecewiseAffineTransform:", skimage_seconds))
    print(f"  ratio: JAX warp is {skimage_seconds / jax_seconds:.1f}x faster "
          f"({skimage_seconds / bare_seconds:.1f}x bare)")
    print(f"the same {frames} frames at 256x256")
    print(line("JAX warp (jit), default:", large_seconds))
    result = {
        "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}",
        "frames": frames, "num_modes": _MODES.value, "num_frames": _FRAMES.value, "repeats": _REPEATS.value,
        "warp_s": {"jax_default": jax_seconds, "jax_bare": bare_seconds, "skimage": skimage_seconds,
                   "jax_default_256": large_seconds},
        "sampling_s": {},
    }
    if _WORKDIR.value:
        result["workdir"] = _WORKDIR.value
        result["sampling_s"] = _sampling(image, crop)
    if _JSON.value:
        files.write_json(_JSON.value, result, indent=1)


def _sampling(image, crop):
    """The whole sampling of one photo with the trained run, per renderer; -> {renderer: {part: seconds}}.

    `sample_photo` warns on stderr at every call (the astronaut already smiles);
    each different warning is printed once, at the end."""
    warned = io.StringIO()
    with contextlib.redirect_stderr(warned):
        result = _sampling_timed(image, crop)
    for line in dict.fromkeys(warned.getvalue().splitlines()):
        print(line, file=sys.stderr)
    return result


def _sampling_timed(image, crop):
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        photo = os.path.join(folder, "astronaut.png")
        files.write_png(photo, image)
        has_translator = run_dir.has_model("translator", run_dir.load_config(_WORKDIR.value), _WORKDIR.value)
        renderers = ["warp"] + (["translator"] if has_translator else [])
        for renderer in renderers:
            generator = sample.Generator.from_workdir(_WORKDIR.value, renderer)
            label = generator.info.class_names[0]
            fit = sample.find_face(image, False, photo)
            _, neutral, _ = sample.aligned_crop(image, fit, 64)
            steps = {
                "face + alignment (dlib)": lambda: sample.aligned_crop(image, sample.find_face(image, False, photo), 64),
                "landmark generation": lambda: generator.landmark_sequences(neutral, 0, 0),
            }
            generated = generator.landmark_sequences(neutral, 0, 0)[: _MODES.value]
            steps[f"render ({renderer})"] = lambda: generator.render(crop, neutral, generated)
            steps["whole photo -> files"] = lambda: sample.sample_photo(
                generator, photo, os.path.join(folder, "out"), label=label, num_modes=_MODES.value,
                seed=0, size=64, fps=8.0,
            )
            if renderer == "warp":  # what `python -m cmm_jax.sample --image=PHOTO` writes by default
                steps["whole, 256 px + paste-back"] = lambda: sample.sample_photo(
                    generator, photo, os.path.join(folder, "out"), label=label, num_modes=_MODES.value,
                    seed=0, size=256, fps=8.0, paste_back=True,
                )
            if renderer == "warp":  # a real portrait: a face filling more of its photo, lips that cross when closed
                steps[PORTRAIT_STEP] = lambda: sample.sample_photo(
                    generator, PORTRAIT, os.path.join(folder, "out"), label=label, num_modes=_MODES.value,
                    seed=0, size=256, fps=8.0, paste_back=True,
                )
                steps.update(_parts_256(generator, image, photo, folder))
            print(f"{renderer}: one photo -> {_MODES.value} videos of {generator.info.num_frames} frames, 64x64")
            result[renderer] = {}
            for name, fn in steps.items():
                result[renderer][name] = _median_seconds(fn, _REPEATS.value)
                print(f"  {name:<26} {result[renderer][name] * 1e3:8.1f} ms")
            if renderer == "warp":
                name = "whole, 256 px + paste-back: CPU time (all threads)"
                result[renderer][name] = _median_seconds(steps["whole, 256 px + paste-back"], _REPEATS.value,
                                                         clock=_cpu_seconds)
                print(f"  {name:<26} {result[renderer][name] * 1e3:8.1f} ms")
    return result


def _parts_256(generator, image, photo, folder) -> dict:
    """name -> callable: each part of `sample_photo` at 256 px with paste-back, alone (one mode where per mode)."""
    fit = sample.find_face(image, False, photo)
    neutral = sample.template_points(fit)
    crop, neutral_px, matrix = sample.aligned_crop(image, fit, 256)
    points = (generator.landmark_sequences(neutral, 0, 0)[: _MODES.value] * (256 / landmarks.CROP_SIZE)).astype(
        np.float32)
    frames = generator.render(crop, neutral_px, points)
    pasted = compositing.paste_back(image, frames[0], matrix, points[0], neutral_px)
    labels = [f"mode {k}" for k in range(len(frames))]
    out = os.path.join(folder, "parts")
    os.makedirs(out, exist_ok=True)
    return {
        "256 px: render (warp)": lambda: generator.render(crop, neutral_px, points),
        "256 px: paste-back, one mode": lambda: compositing.paste_back(image, frames[0], matrix, points[0], neutral_px),
        "256 px: its H.264 (512-px photo)": lambda: files.write_video(os.path.join(out, "photo.mp4"), pasted),
        "256 px: H.264, one mode": lambda: files.write_video(os.path.join(out, "mode.mp4"), frames[0]),
        "256 px: GIF, one mode": lambda: files.write_video(os.path.join(out, "mode.gif"), frames[0]),
        "256 px: grid.png": lambda: files.write_png(os.path.join(out, "grid.png"), visualize.video_grid(
            frames, cell=sample.GRID_CELL, row_labels=labels)),
        "256 px: samples.npz": lambda: files.write_npz(os.path.join(out, "samples.npz"), frames=frames,
                                                      landmarks=points),
    }


if __name__ == "__main__":
    app.run(main)
