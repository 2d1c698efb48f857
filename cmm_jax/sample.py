"""One photo (or a folder of photos) of a neutral face -> K smile videos.

    python -m cmm_jax.sample --workdir=runs/smile --image=me.jpg --num_modes=5 --out=out/

For each photo: dlib finds the largest face and its 68 points, the face is
aligned to the template crop, the trained landmark pipeline (VAE -> conditional
recurrent net -> multi-mode generator) draws K landmark sequences of the
requested class, and a renderer turns the crop and each sequence into a video:
`warp` (piecewise-affine, no training) or `translator` (the trained U-Net).
The frames are S = --size pixels a side: PHOTO_SIZE (256) by default, and the
translator's trained size with --renderer=translator.

OUT gets samples.npz (`frames` uint8 (K, T, S, S, 3), `landmarks` float32
(K, T, 68, 2) in pixels of those frames, `label`, `class_name`, `input_check`:
the input check's warnings, see below; `motion_share`), mode_{k}.mp4,
mode_{k}.gif, grid.png (rows: modes, columns: 8 frames, cells of about 128 px), input.png (the aligned
crop), and mode_{k}_photo.mp4 (the face animated inside the photo; skipped
with --nopaste_back). Everything is written to a temporary folder first and
renamed to OUT at the end, so a failure leaves OUT as it was. With
--image=FOLDER, every photo gets OUT/<name>/, without mode_{k}_photo.mp4
unless --paste_back is given; failures are listed and do not stop the batch.

The models expect a neutral face. The face's points are checked against the
range of the run's neutral training faces (`cmm_jax.input_check`,
DIR/input_range.json): each measure out of range (a smiling mouth, an unusual
shape or pose) is one `warning: PHOTO: ...` line on stderr, and with --strict
the photo is refused. A shape the VAE reconstructs worse than that range allows
is one the models would extrapolate to (they damped the smile of such faces):
its smile is generated for the nearest shape within the range on the line from
the template to it (`motion_share` of the way, one more warning line) and moved
onto the face's own points. Runs trained before input_range.json existed are
sampled without the check.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image
from tqdm import tqdm

from cmm_jax import (alignment, compilation_cache, compositing, configuration, face, files, inference, input_check,
                     landmarks, run_dir, sharding, video_metrics, visualize)
from cmm_jax.errors import UserError, run_or_exit

# The photo behind --paste_back videos is shrunk to this long side at most.
PASTE_BACK_MAX_SIDE = 1024
# Frames of a photo are this many pixels a side unless --size says otherwise
# (the landmark models work in the 64-pixel template; points scale by S / 64).
PHOTO_SIZE = 256
# grid.png is an overview: its cells are about this many pixels a side
# whatever the frames' size (the videos keep the full size).
GRID_CELL = 128
OUTPUT_MARKER = "samples.npz"  # a folder holding it was written by us


class Generator:
    """The trained landmark pipeline of a run and the chosen renderer."""

    def __init__(self, config, info, models: dict, renderer: str = "warp", input_range: dict | None = None):
        self.config, self.info, self.models, self.renderer = config, info, models, renderer
        # The neutral training faces' range (run_dir.read_input_range); None: no check.
        self.input_range = input_range

    @classmethod
    def from_workdir(cls, workdir: str, renderer: str = "warp") -> "Generator":
        config = run_dir.load_config(workdir)
        info = run_dir.load_dataset_info(workdir, config)
        config.unlock()
        names = ("vae", "recurrent", "multimode") + (("translator",) if renderer == "translator" else ())
        mesh = sharding.make_mesh()
        models = {name: run_dir.load_model(name, config, info, workdir, mesh) for name in names}
        models["residuals"] = run_dir.load_residuals(config, workdir)
        return cls(config, info, models, renderer, run_dir.read_input_range(workdir))

    @property
    def num_modes(self) -> int:
        return self.config.num_modes

    def label_index(self, name: str) -> int:
        if name not in self.info.class_names:
            raise UserError(f"unknown label {name!r}; this model knows {', '.join(self.info.class_names)}")
        return self.info.class_names.index(name)

    def motion_share(self, neutral: np.ndarray) -> float:
        """How much of the face's shape (68, 2 crop pixels) its smile is
        generated for: 1, unless the shape is beyond the training faces' range
        (`input_check.share_in_range`, from the template; runs without an
        input range: 1)."""
        if self.input_range is None:
            return 1.0
        return input_check.share_in_range(self.models["vae"], landmarks.normalize(neutral),
                                          landmarks.normalize(alignment.mean_neutral_shape()), self.input_range)

    def landmark_sequences(self, neutral: np.ndarray, label: int, seed: int,
                           share: float | None = None) -> np.ndarray:
        """neutral (68, 2) crop pixels -> (K, T, 68, 2) crop pixels, starting at `neutral`.

        A face beyond the training range gets the smile generated for the
        shape `share` (default: `motion_share`) of the way from the template to
        it: its motion, scaled by the two shapes' inter-ocular distances,
        moves the face's own points."""
        config = self.config.copy_and_resolve_references()
        config.seed = seed
        share = self.motion_share(neutral) if share is None else share
        source = neutral
        if share < 1.0:
            template = alignment.mean_neutral_shape()
            source = (template + share * (neutral - template)).astype(np.float32)
        generated = inference.generate_for_inputs(self.models, landmarks.normalize(source[None]),
                                                  self.info.num_classes, self.info.num_frames, config)
        sequences = np.asarray(landmarks.denormalize(generated[0, label]), np.float32)
        if share < 1.0:
            scale = landmarks.inter_ocular_distance(neutral) / landmarks.inter_ocular_distance(source)
            sequences = (neutral + (sequences - sequences[:, :1]) * scale).astype(np.float32)
        return sequences

    def render(self, crop: np.ndarray, neutral: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """crop uint8 (S, S, 3) with its points neutral (68, 2); sequences (K, T, 68, 2)
        in crop pixels -> uint8 (K, T, S, S, 3)."""
        if self.renderer == "translator":
            return inference.render_translator(self.models["translator"], crop, neutral, sequences)
        return inference.render_warp(crop, neutral, sequences)


def frame_size(generator: Generator, size: int | None) -> int:
    """The side in pixels of the frames drawn: `size`, or when None (not
    chosen) PHOTO_SIZE for the warp and the trained size for the translator,
    said in one line. UserError when the translator is asked for another size."""
    if generator.renderer != "translator":
        return PHOTO_SIZE if size is None else size
    trained = generator.config.translator.image_size
    if size is None:
        print(f"--renderer=translator draws {trained}-pixel frames, the size it was trained at")
        return trained
    if size != trained:
        raise UserError(f"the translator draws {trained}-pixel frames; use --size={trained} or --renderer=warp")
    return size


def _warn(name: str, message: str, warnings: list[str] | None) -> None:
    """One warning line about the photo NAME on stderr, also kept in `warnings` (when given)."""
    print(f"warning: {name}: {message}", file=sys.stderr)
    if warnings is not None:
        warnings.append(message)


def find_face(image: np.ndarray, strict: bool, name: str, warnings: list[str] | None = None) -> face.FaceFit:
    """The largest face, a warning when there are several (an error if strict)."""
    try:
        fit = face.find_face(image)
    except face.NoFaceError:
        raise UserError(f"{name}: no face found") from None
    if fit.num_faces > 1:
        if strict:
            raise UserError(f"{name}: {fit.num_faces} faces found and --strict is set; give a photo of one person")
        _warn(name, f"{fit.num_faces} faces found; using the largest", warnings)
    return fit


def check_face(generator: Generator, neutral: np.ndarray, strict: bool, name: str,
               warnings: list[str] | None = None) -> list[str] | None:
    """The face's points (68, 2, 64-crop pixels) against the run's neutral
    training faces: one warning line per problem (an error if strict). Returns
    the problems, or None when the run has no input range."""
    if generator.input_range is None:
        return None
    problems = input_check.check_input(generator.models["vae"], landmarks.normalize(neutral), generator.input_range)
    if problems and strict:
        raise UserError(f"{name}: {'; '.join(problems)}; --strict refuses it")
    for problem in problems:
        _warn(name, problem, warnings)
    return problems


def template_points(fit: face.FaceFit) -> np.ndarray:
    """The face's 68 points aligned into the landmark models' 64-pixel template crop, float32 (68, 2)."""
    return landmarks.apply_affine(alignment.alignment_matrix(fit.points), fit.points).astype(np.float32)


def aligned_crop(image: np.ndarray, fit: face.FaceFit, size: int):
    """-> (crop uint8 (S, S, 3), its points (68, 2) in crop pixels, matrix photo->crop (2, 3))."""
    matrix = alignment.alignment_matrix(fit.points, size)
    crop = alignment.warp_to_crop(image, matrix, size)
    return crop, landmarks.apply_affine(matrix, fit.points).astype(np.float32), matrix


def _write_paste_back(path, image, matrix, frames, points, neutral, fps):
    """One mode's video put back into the photo (at most PASTE_BACK_MAX_SIDE px a side) -> PATH."""
    scale = min(1.0, PASTE_BACK_MAX_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
        matrix = np.asarray(matrix) @ np.diag([1.0 / scale, 1.0 / scale, 1.0])
    files.write_video(path, compositing.paste_back(image, frames, matrix, points, neutral), fps=fps)


def sample_photo(generator: Generator, path: str, out: str, *, label: str, num_modes: int, seed: int,
                 size: int, fps: float, strict: bool = False, paste_back: bool = False,
                 metrics: bool = False, name: str | None = None) -> dict:
    """Writes OUT for one photo; returns a summary. UserError on bad input.

    size: the frames' side in pixels (the command line's choice: `frame_size`);
    paste_back: also write mode_{k}_photo.mp4; name: what the face's warnings
    and errors call the photo (default: its path). The summary's "warnings":
    every warning line printed about the photo, without its "warning: NAME: "."""
    name = name or path
    label_index = generator.label_index(label)
    if num_modes < 1:
        raise UserError(f"--num_modes must be at least 1, got {num_modes}")
    if num_modes > generator.num_modes:
        raise UserError(f"--num_modes={num_modes}, but this model has {generator.num_modes} modes")
    _check_out(out)
    image = files.read_photo(path)
    warnings = []
    fit = find_face(image, strict, name, warnings)
    # The landmark models work in the template's 64-pixel crop; the template
    # scales with the crop, so points at `size` are the same times size / 64.
    neutral = template_points(fit)
    problems = check_face(generator, neutral, strict, name, warnings)
    share = generator.motion_share(neutral)
    if share < 1.0:
        _warn(name, "its shape is beyond the training faces', so its smile is generated for the shape "
              f"{share:.0%} of the way to it from the template (the farthest within their range) and moved onto "
              "its own points", warnings)
    sequences = generator.landmark_sequences(neutral, label_index, seed, share)[:num_modes]
    crop, neutral_px, matrix = aligned_crop(image, fit, size)
    points = (sequences * (size / landmarks.CROP_SIZE)).astype(np.float32)
    frames = generator.render(crop, neutral_px, points)

    summary = {"image": path, "label": label, "num_modes": num_modes, "faces": fit.num_faces, "size": size,
               "input_check": problems, "motion_share": share, "warnings": warnings}
    if metrics:
        # input_check: the problems found in the face (null: the run has no input range).
        summary["metrics"] = dict(video_metrics.video_metrics(frames, points, crop), input_check=problems,
                                  motion_share=share)

    def write(folder):
        os.makedirs(folder)
        labels = [f"mode {k}" for k in range(num_modes)]
        jobs = [
            lambda: files.write_npz(
                os.path.join(folder, "samples.npz"), frames=frames, landmarks=points, label=np.int32(label_index),
                class_name=np.str_(label), input_check=np.array(problems or [], dtype=np.str_),
                motion_share=np.float32(share)),
            lambda: files.write_png(os.path.join(folder, "input.png"), crop),
            lambda: files.write_png(os.path.join(folder, "grid.png"),
                                    visualize.video_grid(frames, cell=GRID_CELL, row_labels=labels)),
        ]
        if paste_back:  # the longest jobs first, so that none is left running alone at the end
            jobs[:0] = [functools.partial(_write_paste_back, os.path.join(folder, f"mode_{k}_photo.mp4"),
                                          image, matrix, frames[k], points[k], neutral_px, fps)
                        for k in range(num_modes)]
        for k in range(num_modes):
            for suffix in (".mp4", ".gif"):
                jobs.append(functools.partial(files.write_video, os.path.join(folder, f"mode_{k}{suffix}"), frames[k],
                                              fps=fps))
        if metrics:
            jobs.append(lambda: files.write_json(os.path.join(folder, "metrics.json"), summary["metrics"], sort_keys=True))
        files.run_parallel(jobs)

    try:
        files.write_atomically(out, write)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from e
    return summary


def _refuse_a_file(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out={out} exists and is not a folder")


def _check_out(out: str) -> None:
    """OUT must be new, empty, or an earlier output of this script (replaced)."""
    _refuse_a_file(out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, OUTPUT_MARKER)):
        raise UserError(f"--out={out} is a non-empty folder not written by cmm_jax.sample; choose another")


def output_names(photos: list[str]) -> list[str]:
    """Each photo's folder name in batch mode: its file name without the
    extension, or with it (dot made underscore: face_jpg) where two photos
    would share one (face.jpg, face.png)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in photos]
    counts = collections.Counter(stem.casefold() for stem in stems)  # casefold: macOS and Windows folders
    names = [os.path.basename(path).replace(".", "_") if counts[stem.casefold()] > 1 else stem
             for path, stem in zip(photos, stems)]
    taken = set()
    for i, name in enumerate(names):  # and should that name be taken too (face_jpg.png), a number
        unique, number = name, 1
        while unique.casefold() in taken:
            number += 1
            unique = f"{name}_{number}"
        taken.add(unique.casefold())
        names[i] = unique
    return names


def sample_folder(generator: Generator, folder: str, out: str, **options) -> int:
    """Every photo of a folder -> OUT/<name>/ (`output_names`). Returns the number that failed."""
    photos = files.photos_in(folder)
    _refuse_a_file(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from e
    rows = []
    for path, name in tqdm(list(zip(photos, output_names(photos))), desc="photos", unit="photo", dynamic_ncols=True):
        start = time.perf_counter()
        try:
            summary = sample_photo(generator, path, os.path.join(out, name), **options)
            warnings = "; ".join(f"warning: {w}" for w in summary["warnings"])
            rows.append((name, "ok", f"{time.perf_counter() - start:.1f}s", warnings))
        except UserError as e:
            rows.append((name, "FAILED", f"{time.perf_counter() - start:.1f}s", str(e)))
    width = max(len(r[0]) for r in rows)
    print(f"{'photo':<{width}}  status  time    message")
    for name, status, seconds, message in rows:
        print(f"{name:<{width}}  {status:<6}  {seconds:>6}  {message}")
    failed = sum(r[1] != "ok" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} photos done, {failed} failed; outputs in {out}")
    return failed


def write_run_samples(config, info, models: dict, out_dir: str, input_range: dict | None,
                      metrics: bool = False) -> dict[str, dict | None]:
    """What a finished training run shows of itself: scikit-image's astronaut
    through every renderer it has, the first class, all K modes, as
    OUT_DIR/astronaut_{renderer}/ (the files of `sample_photo`).

    The astronaut smiles (lip corners raised, teeth showing), so the input
    check warns about her in the run's output and records it in samples.npz
    (`input_check`): the demo is a smile added to a smile. A mouth warped to
    the neutral shape does not make her neutral (dlib still sees the smile in
    her teeth and cheeks), so she is shown as she is. input_range: the run's
    (`run_dir.read_input_range`). metrics: also measure the frames with dlib
    (`video_metrics`; each folder gets metrics.json). Returns {folder name:
    its metrics, or None without `metrics`}.
    """
    written = {}
    with tempfile.TemporaryDirectory() as folder:
        photo = os.path.join(folder, "astronaut.png")
        files.write_png(photo, files.astronaut())
        for renderer in ("warp", "translator"):
            if renderer == "translator" and "translator" not in models:
                continue
            generator = Generator(config, info, models, renderer, input_range)
            name = f"astronaut_{renderer}"
            out = os.path.join(out_dir, name)
            summary = sample_photo(generator, photo, out, label=info.class_names[0], num_modes=config.num_modes,
                                   seed=config.seed, size=config.translator.image_size, fps=config.eval.fps,
                                   metrics=metrics, name=f"scikit-image's astronaut ({out})")
            written[name] = summary.get("metrics")
    return written


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO

    def run():
        compilation_cache.enable_from_flags()
        if FLAGS.num_modes is not None and FLAGS.num_modes < 1:  # before loading any model
            raise UserError(f"--num_modes must be at least 1, got {FLAGS.num_modes}")
        if FLAGS.size < landmarks.CROP_SIZE // 2 or FLAGS.size > 1024:
            raise UserError(f"--size must be in [{landmarks.CROP_SIZE // 2}, 1024], got {FLAGS.size}")
        if not configuration.MIN_FPS <= FLAGS.fps <= configuration.MAX_FPS:
            raise UserError(f"--fps must be in [{configuration.MIN_FPS}, {configuration.MAX_FPS}], got {FLAGS.fps:g}")
        # "--image=~/me.jpg": the shell leaves a ~ after "=" as it is.
        image, out, workdir = (os.path.expanduser(p) for p in (FLAGS.image, FLAGS.out, FLAGS.workdir))
        if not os.path.exists(image):
            raise UserError(f"--image={image}: no such file or folder")
        if FLAGS.spread is not None and not FLAGS.spread >= 0:
            raise UserError(f"--spread must be >= 0, got {FLAGS.spread}")
        generator = Generator.from_workdir(workdir, FLAGS.renderer)
        if FLAGS.spread is not None:
            generator.config.multimode.spread = FLAGS.spread
        batch = os.path.isdir(image)
        options = dict(
            label=FLAGS.label or generator.info.class_names[0],
            num_modes=generator.num_modes if FLAGS.num_modes is None else FLAGS.num_modes,
            seed=FLAGS.seed, size=frame_size(generator, FLAGS.size if FLAGS["size"].present else None),
            fps=FLAGS.fps, strict=FLAGS.strict, metrics=FLAGS.metrics,
            # On for one photo; for a folder only when asked for (it costs time and memory per photo).
            paste_back=FLAGS.paste_back and (not batch or FLAGS["paste_back"].present),
        )
        generator.label_index(options["label"])
        if batch:
            if sample_folder(generator, image, out, **options):
                sys.exit(1)
            return
        summary = sample_photo(generator, image, out, **options)
        videos = "video" if summary["num_modes"] == 1 else "videos"
        print(f"{summary['num_modes']} {summary['label']} {videos} of {image} in {out}")
        if "metrics" in summary:
            print(json.dumps(summary["metrics"], indent=2, sort_keys=True))

    run_or_exit(run)


if __name__ == "__main__":
    compilation_cache.define_flags()
    flags.DEFINE_string("workdir", None, "Folder of a training run (python -m cmm_jax.main).")
    flags.DEFINE_string("image", None, "A photo of a neutral face, or a folder of photos.")
    flags.DEFINE_string("out", None, "Output folder (a folder per photo in batch mode).")
    flags.DEFINE_string("label", None, "Expression class; default: the dataset's first class.")
    flags.DEFINE_integer("num_modes", None, "Videos per photo, at most the model's K (default K).")
    flags.DEFINE_integer("seed", 0, "Random seed of the landmark sequences.")
    flags.DEFINE_float("spread", None, "0: each mode's prototype smile; 1: a draw of the smiles around it "
                       "(default: the run's multimode.spread).")
    flags.DEFINE_enum("renderer", "warp", ["warp", "translator"], "How landmarks become frames.")
    flags.DEFINE_integer("size", PHOTO_SIZE, "Frame size in pixels. warp: 32 to 1024; translator: the size it "
                         "was trained at, which is then the default.")
    flags.DEFINE_float("fps", 8.0, "Frames per second of the videos.")
    flags.DEFINE_bool("strict", False, "Refuse photos with several faces (default: use the largest) and faces "
                      "outside the run's range of neutral training faces (default: a warning line).")
    flags.DEFINE_bool("paste_back", True, "Also write mode_{k}_photo.mp4: the face animated in the photo. "
                      "Default: on for one photo, off for a folder of photos (about 8 s and 0.5 GB more per "
                      "1024-pixel photo at K=5 on 2 CPU cores); --nopaste_back skips it.")
    flags.DEFINE_bool("metrics", False, "Measure the videos with dlib and write metrics.json.")
    flags.mark_flags_as_required(["workdir", "image", "out"])
    app.run(main, flags_parser=configuration.parse_flags)
