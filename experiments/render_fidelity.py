"""How much of the claimed smile the rendered frames show, measured by dlib (issue 12).

    python -m experiments.render_fidelity --workdir=runs/smile [--out=runs/render_fidelity] \
        [--photo="NAME=PATH" ...] [--noshipped] [--reference_draws=N]

For each photo (Grace Hopper, tests/data; scikit-image's astronaut with her
smiling mouth warped shut to the template's neutral mouth; then each --photo,
e.g. the face_recognition package's, BUILD.md), each class and
each size (64, 256 px): the run's K landmark sequences rendered by the warp
three ways (the bare warp; with the mouth interior, `cmm_jax.mouth`; with the
smile's folds too, `cmm_jax.folds`, the default), measured by
`video_metrics.video_metrics`. Beside them, the data's own reference: K of
the dataset's test clips of the class (their noise-free landmarks, chosen
with --seed), moved onto the photo's face (each clip's motion from its first
frame, scaled by the inter-ocular distances) and drawn by the default
renderer: what real motion scores on this photo by the same measure (the
ceiling for the fidelities, the floor for the jumps). Those K clips are one
draw: their claimed apex opening moves by about a third between draws. So per
photo and class, the motion that EVERY test clip of the class claims, moved
onto the face the same way (landmarks only, nothing drawn or measured; size
"-"): the mean apex width ratio and opening that the generated motion's are to
be compared with, and in the JSON their spread over the clips. With
--reference_draws=N, the reference is also drawn N times (seeds --seed ..
--seed + N - 1) and a row gives its mean ± std over the draws: how far the
ceiling itself moves with the clips chosen. And once per photo and
size, the instrument's own floor: K videos of the photo itself, cropped by a
camera that moves smoothly (a shift, zoom and turn eased in over the clip,
`camera_motion`), so that every frame is real pixels and every claimed point
is exactly where the face went; dlib's jumps there are its jitter on smoothly
moving real faces, with no renderer in the way (the mouth's columns do not
apply: a camera changes no expression). Prints a Markdown table, writes it and the
per-case metrics to OUT/render_fidelity.json, and OUT/apex_256.jpg: the five
apex frames of the first photo's first class at 256 px, one row per
rendering (the README figure, docs/apex_before_after.jpg).

With --mediapipe_python=PATH (a Python with MediaPipe 0.10.14, BUILD.md "A
second instrument"), every case is also read by MediaPipe Face Mesh
(`experiments/mediapipe_points.py`), frame by frame and as a tracked video:
its points are put in dlib's numbering (`MESH_TO_DLIB`) and scored by the
same `video_metrics.render_fidelity` and `jump_statistics`, columns
`mediapipe_*` (static) and `mediapipe_video_*`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
from absl import app, flags, logging

from cmm_jax import alignment, face, files, landmarks, run_dir, sample, video_metrics, warp
from cmm_jax.data import pipeline, synth
from cmm_jax.errors import UserError, run_or_exit
from experiments import summarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE_HOPPER = os.path.join(REPO, "tests", "data", "grace_hopper.jpg")
# The columns that `summarize --render` tables (the first five about the mouth), and the largest jump.
COLUMNS = summarize.RENDER_COLUMNS + ("landmark_jump_max",)
# What points claim, with no frames: the only columns of ALL_CLIPS_ROW.
CLAIMED_COLUMNS = ("apex_mouth_width_ratio_claimed", "apex_mouth_opening_claimed")

# (name, mouth interior, smile folds): the bare warp, each addition, and the default.
RENDERERS = (("bare warp", False, False), ("with mouth interior", True, False),
             ("with mouth interior and folds (default)", True, True))
# The row of the data's own clips (drawn by the default renderer).
DATA_ROW = "data's test clips, default (reference)"
# With --reference_draws > 1: the data's reference over that many draws of K
# clips (the first is DATA_ROW's), mean ± std over the draws.
DRAWS_ROW = "data's test clips, {count} draws, default (reference, mean ± std)"
# The row of every test clip of the class, moved onto the face: landmarks only.
ALL_CLIPS_ROW = "all the data's test clips, claimed motion (landmarks only)"
# The row of every test clip of the class drawn by smile_synth's own law on the
# photo's face shape (`law_clips`): landmarks only; runs on smile_synth only.
LAW_ROW = "all the data's test clips on this face's shape, by the data's law, claimed motion (landmarks only)"
# The row of the photo itself moved by a camera: no renderer, no change of expression.
CAMERA_ROW = "the photo moved rigidly, no renderer (instrument floor)"
# Its motion at the end of each video: a shift of this many inter-ocular distances,
# a zoom of up to this share and a turn of up to this many degrees, eased in.
CAMERA_SHIFT, CAMERA_ZOOM, CAMERA_TURN = 0.15, 0.04, 2.0
# MediaPipe Face Mesh's point for each dlib point that the measures use: the
# outer eye corners (inter-ocular distance), the mouth's corners, the inner lips
# (`video_metrics.mouth_opening`), the outer lips' middles, the nose tip, the chin.
MESH_TO_DLIB = {36: 33, 45: 263, 48: 61, 54: 291, 51: 0, 57: 17, 60: 78, 61: 82, 62: 13, 63: 312, 64: 308,
                65: 317, 66: 14, 67: 87, 30: 1, 8: 152}
MEDIAPIPE_SCRIPT = os.path.join(REPO, "experiments", "mediapipe_points.py")
MEDIAPIPE_MODES = {"mediapipe": "static", "mediapipe_video": "video"}
MEDIAPIPE_COLUMNS = tuple(f"{prefix}_{name}" for prefix in MEDIAPIPE_MODES
                          for name in ("widening", "opening", "detection", "jump_p99"))
# Columns that measure a change of the mouth's shape, which a camera does not make.
MOUTH_COLUMNS = summarize.MOUTH_COLUMNS + tuple(c for c in MEDIAPIPE_COLUMNS if c.endswith(("widening", "opening")))

flags.DEFINE_string("workdir", None, "A trained run.")
flags.DEFINE_string("out", "runs/render_fidelity", "Output folder.")
flags.DEFINE_list("sizes", ["64", "256"], "Frame sizes.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_multi_string("photo", [], "More photos of neutral faces, each NAME=PATH.")
flags.DEFINE_string("mediapipe_python", None, "A Python with MediaPipe 0.10.14: also measure with Face Mesh.")
flags.DEFINE_integer("reference_draws", 1, "Draws of K test clips for the data's reference: more than 1 adds "
                     "a row of their mean ± std (each draw costs as much as a renderer's row).")
flags.DEFINE_bool("shipped", True, "Measure the shipped photos (Grace Hopper, the astronaut); "
                  "--noshipped: only the --photo ones.")


def given_photos(specs: list[str]) -> dict[str, np.ndarray]:
    """--photo NAME=PATH values -> {name: image}."""
    photos = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            raise UserError(f"--photo wants NAME=PATH, got {spec!r}")
        photos[name] = files.read_photo(path)
        try:
            face.find_face(photos[name])
        except face.NoFaceError:
            raise UserError(f"--photo {path}: no face found") from None
    return photos


def neutral_astronaut() -> np.ndarray:
    """The astronaut, 512x512 aligned, her mouth warped to the template's closed neutral mouth."""
    image = files.astronaut()
    size = image.shape[0]
    matrix = alignment.alignment_matrix(face.find_face(image).points, size)
    crop = alignment.warp_to_crop(image, matrix, size)
    points = landmarks.apply_affine(matrix, face.find_face(image).points).astype(np.float32)
    mouth = list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    template = alignment.mean_neutral_shape(size)
    target = points.copy()
    target[mouth] = template[mouth] - template[mouth].mean(0) + points[mouth].mean(0)
    return np.asarray(warp.warp_sequence(crop, points, target[None], mouth_interior=False))[0]


def apex_frames(frames: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, T, S, S, 3), (K, T, 68, 2) -> (K, S, S, 3): each video's widest-mouth frame (claimed)."""
    width = np.linalg.norm(points[:, :, landmarks.MOUTH_LEFT] - points[:, :, landmarks.MOUTH_RIGHT], axis=-1)
    return frames[np.arange(len(frames)), width.argmax(1)]


def data_builder(workdir: str):
    """The run's dataset's TFDS builder."""
    return pipeline.load_builder(run_dir.load_config(workdir).dataset)


def data_clips(builder) -> dict:
    """The dataset's test split (`pipeline.load_split`)."""
    return pipeline.load_split(builder.as_data_source("test"))


def law_clips(builder, neutral: np.ndarray, label: int) -> np.ndarray | None:
    """Every test clip of class `label` of a `smile_synth` dataset drawn again by
    the data's own law on the face shape `neutral` (68, 2, template pixels;
    `synth.clip_on_face`: the same smiles and people, the AU fields of this face)
    and moved onto it as the other references are (`moved_onto`): (N, T, 68, 2).
    None for another dataset, whose law is not known."""
    if builder.info.name != "smile_synth":
        return None
    config = builder.builder_config
    subjects = pipeline.builder_module("smile_synth").split_subjects(config)["test"]
    clips = [synth.clip_on_face(neutral, config.seed, subject, label, clip, config.num_frames)
             for subject in subjects for clip in range(config.clips_per_class)]
    return moved_onto(neutral, np.asarray(clips))


def clips_of(test: dict, label: int, count: int, seed: int) -> np.ndarray:
    """`count` test clips of class `label`, chosen by `seed`: their noise-free
    landmarks in template crop pixels, (K, T, 68, 2)."""
    chosen = np.sort(np.random.default_rng(seed).choice(np.nonzero(test["label"] == label)[0], count, replace=False))
    return landmarks.denormalize(test["reference"][chosen])


def moved_onto(neutral: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Each clip's motion from its first frame, scaled by the inter-ocular
    distances, added to `neutral` (68, 2): (K, T, 68, 2) float32."""
    scale = landmarks.inter_ocular_distance(neutral) / landmarks.inter_ocular_distance(clips[:, :1])
    return (neutral + (clips - clips[:, :1]) * scale[..., None, None]).astype(np.float32)


def claimed_motion(sequences: np.ndarray) -> dict[str, float]:
    """The apex width ratio and opening (CLAIMED_COLUMNS) that sequences
    (N, T, 68, 2) claim, as `video_metrics.render_fidelity` reads them off
    the points: their mean over the N sequences, and (`_clip_std`) their
    standard deviation (ddof 1), from which a K-sequence draw's spread follows."""
    each = [video_metrics.render_fidelity(one[None], one[None]) for one in sequences]
    found = {}
    for name in CLAIMED_COLUMNS:
        found[name], found[f"{name}_clip_std"] = summarize.spread([e[name] for e in each])
    return found


def camera_motion(image: np.ndarray, size: int, count: int, num_frames: int, seed: int):
    """`count` videos of `num_frames` aligned crops of the photo, each by a
    camera eased from the aligned view into its own shift (CAMERA_SHIFT
    inter-ocular distances in a random direction), zoom (up to CAMERA_ZOOM)
    and turn (up to CAMERA_TURN degrees) about the crop's centre. -> frames
    uint8 (K, T, S, S, 3), the face's points in them (K, T, 68, 2) and the
    aligned crop (S, S, 3)."""
    fit = face.find_face(image)
    base = np.vstack([alignment.alignment_matrix(fit.points, size), [0.0, 0.0, 1.0]])
    iod = landmarks.inter_ocular_distance(landmarks.apply_affine(base[:2], fit.points))
    ease = (1.0 - np.cos(np.linspace(0.0, np.pi, num_frames))) / 2.0
    centre = np.array([[1.0, 0.0, -size / 2], [0.0, 1.0, -size / 2], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(seed)
    frames, points = [], []
    for _ in range(count):
        direction = rng.normal(size=2)
        shift = CAMERA_SHIFT * iod * direction / np.linalg.norm(direction)
        zoom, turn = rng.uniform(-CAMERA_ZOOM, CAMERA_ZOOM), np.radians(rng.uniform(-CAMERA_TURN, CAMERA_TURN))
        video, moved = [], []
        for e in ease:
            cosine, sine = (1.0 + e * zoom) * np.cos(e * turn), (1.0 + e * zoom) * np.sin(e * turn)
            camera = np.array([[cosine, -sine, e * shift[0]], [sine, cosine, e * shift[1]], [0.0, 0.0, 1.0]])
            matrix = (np.linalg.inv(centre) @ camera @ centre @ base)[:2]
            video.append(alignment.warp_to_crop(image, matrix, size))
            moved.append(landmarks.apply_affine(matrix, fit.points))
        frames.append(video)
        points.append(moved)
    return np.asarray(frames), np.asarray(points, np.float32), alignment.warp_to_crop(image, base[:2], size)


def in_dlib_numbering(mesh: np.ndarray) -> np.ndarray:
    """MediaPipe's (..., 468, 2) -> (..., 68, 2): the points of MESH_TO_DLIB in
    their dlib places, NaN elsewhere."""
    points = np.full(mesh.shape[:-2] + (landmarks.NUM_POINTS, 2), np.nan)
    for dlib_index, mesh_index in MESH_TO_DLIB.items():
        points[..., dlib_index, :] = mesh[..., mesh_index, :]
    return points


def check_mediapipe(python: str) -> None:
    """UserError unless `python` runs and imports MediaPipe."""
    try:
        done = subprocess.run([python, "-c", "import mediapipe"], capture_output=True, text=True)
    except OSError as error:
        raise UserError(f"--mediapipe_python {python}: {error.strerror}") from None
    if done.returncode:
        raise UserError(f"--mediapipe_python {python} cannot import mediapipe (BUILD.md, "
                        "\"A second instrument\", says how to make one)")


def mediapipe_metrics(python: str, frames: np.ndarray, points: np.ndarray) -> dict:
    """The render fidelity, detection rate and jumps that MediaPipe Face Mesh
    reads in frames (K, T, S, S, 3) against the claimed points (K, T, 68, 2),
    per frame (`mediapipe_*`) and tracked over each video (`mediapipe_video_*`)."""
    with tempfile.TemporaryDirectory() as folder:
        given, found = os.path.join(folder, "frames.npz"), os.path.join(folder, "points.npz")
        np.savez(given, frames=frames)
        done = subprocess.run([python, MEDIAPIPE_SCRIPT, given, found], capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"MediaPipe failed on the frames: {last}")
        with np.load(found) as read:
            meshes = {prefix: read[mode] for prefix, mode in MEDIAPIPE_MODES.items()}
    result = {}
    for prefix, mesh in meshes.items():
        measured = in_dlib_numbering(mesh)
        fidelity = video_metrics.render_fidelity(measured, points)
        result[f"{prefix}_widening"] = fidelity["render_fidelity_widening"]
        result[f"{prefix}_opening"] = fidelity["render_fidelity_opening"]
        result[f"{prefix}_detection"] = float(np.isfinite(mesh[..., 0, 0]).mean())
        result[f"{prefix}_jump_p99"] = video_metrics.jump_statistics(measured, points)["landmark_jump_p99"]
    return result


def metrics_of(frames: np.ndarray, points: np.ndarray, crop: np.ndarray, mediapipe_python: str | None) -> dict:
    """`video_metrics.video_metrics` (dlib), and MediaPipe's (`mediapipe_metrics`) with mediapipe_python."""
    found = video_metrics.video_metrics(frames, points, crop)
    if mediapipe_python:
        found.update(mediapipe_metrics(mediapipe_python, frames, points))
    return found


def mean_and_std(draws: list[dict]) -> dict:
    """Metrics of several draws -> each one's mean and (key + "_std") standard
    deviation over the draws where it is finite (`summarize.spread`: ddof 1,
    0 where it is finite once; NaN where it never is)."""
    found = {}
    for name in draws[0]:
        values = np.array([d[name] for d in draws], np.float64)
        values = values[np.isfinite(values)]
        found[name], found[f"{name}_std"] = summarize.spread(values) if values.size else (float("nan"),) * 2
    return found


def measure(generator, image: np.ndarray, label: int, size: int, seed: int, clips: np.ndarray,
            mediapipe_python: str | None = None, more_clips: tuple = ()) -> dict:
    """Every rendering of the generated sequences, then the data's clips (template
    pixels, `clips_of`) by the default renderer: {row: {metrics, apex}}; with
    mediapipe_python, MediaPipe's measures too (`mediapipe_metrics`). With
    more_clips (more draws of K clips), also DRAWS_ROW: the data's row
    mean ± std over `clips` and those draws (no apex frames)."""
    fit = face.find_face(image)
    neutral = sample.template_points(fit)
    crop, neutral_px, _ = sample.aligned_crop(image, fit, size)

    def drawn(sequences, interior=True, folds=True):
        points = (sequences * (size / landmarks.CROP_SIZE)).astype(np.float32)
        frames = np.asarray(warp.warp_sequence(crop, neutral_px, points, mouth_interior=interior, smile_folds=folds))
        return frames, points

    generated = generator.landmark_sequences(neutral, label, seed)
    rows = [(name, generated, interior, folds) for name, interior, folds in RENDERERS]
    rows.append((DATA_ROW, moved_onto(neutral, clips), True, True))
    result = {}
    for name, sequences, interior, folds in rows:
        frames, points = drawn(sequences, interior, folds)
        result[name] = {"metrics": metrics_of(frames, points, crop, mediapipe_python),
                        "apex": apex_frames(frames, points)}
    if more_clips:
        draws = [result[DATA_ROW]["metrics"]] + [metrics_of(*drawn(moved_onto(neutral, c)), crop, mediapipe_python)
                                                 for c in more_clips]
        result[DRAWS_ROW.format(count=len(draws))] = {"metrics": mean_and_std(draws), "apex": None}
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO

    def run():
        python = flags.FLAGS.mediapipe_python
        if python:
            check_mediapipe(python)
        generator = sample.Generator.from_workdir(flags.FLAGS.workdir)
        photos = {}
        if flags.FLAGS.shipped:
            photos = {"Grace Hopper": files.read_photo(GRACE_HOPPER), "astronaut, mouth neutralised": neutral_astronaut()}
        photos.update(given_photos(flags.FLAGS.photo))
        if not photos:
            raise UserError("no photos: --noshipped needs at least one --photo")
        if flags.FLAGS.reference_draws < 1:
            raise UserError(f"--reference_draws must be at least 1, got {flags.FLAGS.reference_draws}")
        os.makedirs(flags.FLAGS.out, exist_ok=True)
        table, cases = [], []
        columns = COLUMNS + (MEDIAPIPE_COLUMNS if python else ())
        header = "| photo | class | size | renderer | " + " | ".join(columns) + " |"
        table += [header, "|---" * (len(columns) + 4) + "|"]
        figure = None
        builder = data_builder(flags.FLAGS.workdir)
        test = data_clips(builder)

        def add(photo, class_name, size, renderer, m, blank=()):
            """One case: into the JSON's cases and the table (the `blank` columns as dashes), and printed."""
            cases.append({"photo": photo, "class": class_name, "size": size, "renderer": renderer,
                          **{k: float(v) for k, v in m.items()}})
            def shown(k):
                if k in blank:
                    return "—"
                return f"{m[k]:.3f}" + (f" ± {m[k + '_std']:.3f}" if k + "_std" in m else "")

            table.append(f"| {photo} | {class_name} | {size} | {renderer} | " + " | ".join(map(shown, columns)) + " |")
            print(table[-1], flush=True)

        for photo, image in photos.items():
            neutral = sample.template_points(face.find_face(image))
            for label, class_name in enumerate(generator.info.class_names):
                every = landmarks.denormalize(test["reference"][test["label"] == label])
                claimed_only = [c for c in columns if c not in CLAIMED_COLUMNS]
                add(photo, class_name, "-", ALL_CLIPS_ROW, {**claimed_motion(moved_onto(neutral, every)),
                                                           "clips": len(every)}, blank=claimed_only)
                redrawn = law_clips(builder, neutral, label)
                if redrawn is not None:
                    add(photo, class_name, "-", LAW_ROW, {**claimed_motion(redrawn), "clips": len(redrawn)},
                        blank=claimed_only)
                clips = clips_of(test, label, generator.num_modes, flags.FLAGS.seed)
                more = tuple(clips_of(test, label, generator.num_modes, flags.FLAGS.seed + d)
                             for d in range(1, flags.FLAGS.reference_draws))
                for size in map(int, flags.FLAGS.sizes):
                    result = measure(generator, image, label, size, flags.FLAGS.seed, clips, python, more)
                    for renderer, found in result.items():
                        add(photo, class_name, size, renderer, found["metrics"])
                    if figure is None and size == 256:
                        rows = [np.concatenate(list(result[r]["apex"]), axis=1) for r, _, _ in RENDERERS]
                        figure = np.concatenate(rows, axis=0)
            for size in map(int, flags.FLAGS.sizes):
                frames, points, crop = camera_motion(image, size, generator.num_modes, generator.info.num_frames,
                                                     flags.FLAGS.seed)
                add(photo, "-", size, CAMERA_ROW, metrics_of(frames, points, crop, python), MOUTH_COLUMNS)
        text = "\n".join(table)
        print(text)
        files.write_json(os.path.join(flags.FLAGS.out, "render_fidelity.json"),
                         {"workdir": flags.FLAGS.workdir, "seed": flags.FLAGS.seed, "cases": cases, "table": text})
        if figure is not None:
            files.write_jpeg(os.path.join(flags.FLAGS.out, "apex_256.jpg"), figure)

    run_or_exit(run)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
