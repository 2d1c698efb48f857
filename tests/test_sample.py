"""python -m cmm_jax.sample: outputs, renderers, batch mode and every bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data

from cmm_jax import alignment, face, files, input_check, landmarks, run_dir, sample
from cmm_jax.errors import UserError

from conftest import REPO

NUM_FRAMES = 16  # experiments/tiny.py
CROP = 64


def _run(*args, timeout=300, module="cmm_jax.sample"):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The shipped photo and a gallery of bad ones."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = data.astronaut()
    paths = {"astronaut": folder / "astronaut.jpg"}
    # One face that smiles (lossless: in the JPEG dlib also finds a second, false face).
    paths["smiling"] = folder / "astronaut.png"
    iio.imwrite(paths["smiling"], astronaut)
    # A real face with a closed, near-neutral mouth (public domain; tests/data/README.md).
    paths["neutral"] = os.path.join(REPO, "tests", "data", "grace_hopper.jpg")
    iio.imwrite(paths["astronaut"], astronaut, quality=95)
    paths["no_face"] = folder / "coffee.jpg"
    iio.imwrite(paths["no_face"], data.coffee())
    paths["two_faces"] = folder / "two.png"
    side = np.full((512, 1100, 3), 255, np.uint8)
    side[:, :512], side[:, 560:1072] = astronaut, astronaut[:, :, ::-1] // 2 + 60
    iio.imwrite(paths["two_faces"], side)
    paths["text"] = folder / "notes.jpg"
    paths["text"].write_text("this is not an image\n")
    paths["corrupt"] = folder / "corrupt.jpg"
    paths["corrupt"].write_bytes(paths["astronaut"].read_bytes()[:600])
    paths["gray"] = folder / "gray.png"
    iio.imwrite(paths["gray"], (astronaut.mean(-1)).astype(np.uint8))
    paths["rgba"] = folder / "rgba.png"
    alpha = np.full((512, 512, 1), 255, np.uint8)
    alpha[:64] = 0  # a cut-out: transparent above the head
    iio.imwrite(paths["rgba"], np.concatenate([astronaut, alpha], -1))
    paths["tiny"] = folder / "tiny.png"
    iio.imwrite(paths["tiny"], astronaut[::26, ::26][:20, :20])
    huge = np.full((4000, 6000, 3), 128, np.uint8)
    huge[1000:3048, 2000:4048] = np.repeat(np.repeat(astronaut, 4, 0), 4, 1)
    paths["huge"] = folder / "huge.jpg"
    iio.imwrite(paths["huge"], huge, quality=85)
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def generator(tiny_workdir):
    return sample.Generator.from_workdir(tiny_workdir)


def _sample(generator, photo, out, **overrides):
    options = dict(label="posed", num_modes=3, seed=0, size=CROP, fps=8.0)
    options.update(overrides)
    return sample.sample_photo(generator, photo, str(out), **options)


def test_writes_every_file(generator, photos, tmp_path):
    out = tmp_path / "out"
    _sample(generator, photos["astronaut"], out, paste_back=True, metrics=True)
    names = sorted(os.listdir(out))
    expected = {"samples.npz", "grid.png", "input.png", "metrics.json"}
    expected |= {f"mode_{k}{s}" for k in range(3) for s in (".mp4", ".gif", "_photo.mp4")}
    assert set(names) == expected
    saved = np.load(out / "samples.npz")
    assert saved["frames"].shape == (3, NUM_FRAMES, CROP, CROP, 3) and saved["frames"].dtype == np.uint8
    assert saved["landmarks"].shape == (3, NUM_FRAMES, 68, 2) and saved["landmarks"].dtype == np.float32
    assert int(saved["label"]) == 0 and str(saved["class_name"]) == "posed"
    assert iio.imread(out / "mode_0.gif").shape[:3] == (NUM_FRAMES, CROP, CROP)
    # PyAV reads inside the process (imageio's ffmpeg plugin would fork this JAX process).
    assert iio.imread(out / "mode_0.mp4", plugin="pyav").shape[:3] == (NUM_FRAMES, CROP, CROP)
    assert iio.imread(out / "mode_0_photo.mp4", plugin="pyav").shape[1:3] == (512, 512)
    metrics = json.loads((out / "metrics.json").read_text())
    # The astronaut smiles: the input check says so in metrics.json and samples.npz.
    assert metrics["input_check"] and any("lip corners" in p for p in metrics["input_check"])
    assert list(saved["input_check"]) == metrics["input_check"]
    # The face survives rendering: dlib finds it and it is the same person.
    assert metrics["detection_rate"] >= 0.95 and metrics["identity_same_rate"] >= 0.95
    # How much of the claimed mouth motion dlib sees, and its flicker (cmm_jax.video_metrics).
    assert {"render_fidelity_widening", "render_fidelity_opening", "apex_mouth_width_ratio",
            "apex_mouth_width_ratio_claimed", "landmark_jump_p99", "landmark_jump_max"} <= set(metrics)
    # Frame 0 is the input face.
    np.testing.assert_allclose(saved["landmarks"][:, 0], np.broadcast_to(saved["landmarks"][0, 0], (3, 68, 2)), atol=1e-3)


def test_a_run_trained_with_other_optimiser_settings_loads(tiny_workdir, tmp_path):
    """Sampling restores parameters only: a learning rate, weight decay (Adam's
    state against AdamW's) or b1 other than the sampling config's does not matter."""
    run = tmp_path / "run"
    shutil.copytree(tiny_workdir, run)
    config = json.loads((run / "config.json").read_text())
    for name in ("vae", "recurrent", "multimode", "translator"):
        stage = config[name]
        stage.update(learning_rate=10 * stage["learning_rate"], b1=0.7,
                     weight_decay=0.0 if stage.get("weight_decay") else 0.1)
    (run / "config.json").write_text(json.dumps(config))
    neutral = alignment.mean_neutral_shape()
    for renderer in ("warp", "translator"):
        original, changed = (sample.Generator.from_workdir(str(w), renderer) for w in (tiny_workdir, run))
        np.testing.assert_array_equal(changed.landmark_sequences(neutral, 1, seed=2),
                                      original.landmark_sequences(neutral, 1, seed=2))


def test_a_run_that_reused_stages_samples(tiny_workdir, tmp_path):
    """A run that trained only the multi-mode stage (--config.load_from=BASE)
    samples with BASE's other stages, as training and evaluation did."""
    run = tmp_path / "multimode_only"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(os.path.join(tiny_workdir, "checkpoints", "multimode"), run / "checkpoints" / "multimode")
    for name in ("config.json", "dataset_info.json", "residuals.npz"):
        shutil.copy(os.path.join(tiny_workdir, name), run / name)
    config = json.loads((run / "config.json").read_text())
    config["load_from"] = str(tiny_workdir)
    (run / "config.json").write_text(json.dumps(config))
    neutral = alignment.mean_neutral_shape()
    original, reused = (sample.Generator.from_workdir(str(w)) for w in (tiny_workdir, run))
    np.testing.assert_array_equal(reused.landmark_sequences(neutral, 0, seed=1),
                                  original.landmark_sequences(neutral, 0, seed=1))
    # BASE's recurrent net was trained with another recurrent.relative_input
    # than this run's config says: its parameters would load and compute
    # something else, so it is refused in one line that says what to pass.
    trained = config["recurrent"]["relative_input"]
    config["recurrent"]["relative_input"] = not trained
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=re.escape(
            f"the recurrent stage in {tiny_workdir} was trained with recurrent.relative_input={trained}, and this "
            f"config says {not trained}: pass --config.recurrent.relative_input={trained} to use it")):
        sample.Generator.from_workdir(str(run))


def test_translator_renderer_and_larger_warp(tiny_workdir, generator, photos, tmp_path, capsys):
    translated = sample.Generator.from_workdir(tiny_workdir, renderer="translator")
    # The frame size: 256 for the warp unless chosen; the translator's own, said in one line.
    assert sample.frame_size(generator, None) == sample.PHOTO_SIZE == 256
    assert sample.frame_size(generator, 100) == 100
    capsys.readouterr()
    assert sample.frame_size(translated, None) == CROP
    assert capsys.readouterr().out == f"--renderer=translator draws {CROP}-pixel frames, the size it was trained at\n"
    assert sample.frame_size(translated, CROP) == CROP
    with pytest.raises(UserError, match=f"the translator draws {CROP}-pixel frames; use --size={CROP}"):
        sample.frame_size(translated, 128)
    _sample(translated, photos["astronaut"], tmp_path / "t")
    frames = np.load(tmp_path / "t" / "samples.npz")["frames"]
    assert frames.shape == (3, NUM_FRAMES, CROP, CROP, 3)
    _sample(sample.Generator.from_workdir(tiny_workdir), photos["astronaut"], tmp_path / "w", size=128)
    saved = np.load(tmp_path / "w" / "samples.npz")
    assert saved["frames"].shape == (3, NUM_FRAMES, 128, 128, 3)
    assert saved["landmarks"].max() > CROP  # points are in pixels of the 128 frames


def test_same_seed_same_videos_other_seed_other_videos(generator, photos, tmp_path):
    """At temperature 1 the seed draws the recurrent net's noise; at the
    default 0 the K videos are the face's noise-free modes, whatever the seed."""
    default = generator.config.multimode.temperature
    runs = [(1.0, 0, "a"), (1.0, 0, "b"), (1.0, 1, "c"), (0.0, 0, "d"), (0.0, 1, "e")]
    try:
        for temperature, seed, name in runs:
            generator.config.multimode.temperature = temperature
            _sample(generator, photos["astronaut"], tmp_path / name, seed=seed)
    finally:
        generator.config.multimode.temperature = default
    load = [np.load(tmp_path / name / "samples.npz")["landmarks"] for *_, name in runs]
    np.testing.assert_array_equal(load[0], load[1])
    assert not np.allclose(load[0], load[2])
    np.testing.assert_array_equal(load[3], load[4])


def test_spread_draws_around_the_prototypes(tiny_workdir, generator, photos, tmp_path):
    """Training wrote the residual bank; --spread 1 draws each mode's smile
    around its prototype (the seed chooses), 0 gives the prototypes."""
    bank = run_dir.load_residuals(generator.config, tiny_workdir)
    num_classes = len(generator.info.class_names)
    assert bank.residuals.shape[:3] == (num_classes, generator.num_modes, generator.config.multimode.residual_bank)
    assert bank.residuals.shape[3] == NUM_FRAMES - 1 and bank.counts.sum() > 0
    default = generator.config.multimode.spread
    try:
        for spread, seed, name in [(1.0, 0, "a"), (1.0, 0, "b"), (1.0, 1, "c"), (0.0, 0, "d")]:
            generator.config.multimode.spread = spread
            _sample(generator, photos["astronaut"], tmp_path / name, seed=seed)
    finally:
        generator.config.multimode.spread = default
    a, b, c, d = (np.load(tmp_path / name / "samples.npz")["landmarks"] for name in "abcd")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)
    np.testing.assert_allclose(a[:, 0], d[:, 0], atol=1e-4)  # the same first frame: the face


@pytest.mark.parametrize(
    "photo, message",
    [
        ("no_face", "no face found"),
        ("text", "not a readable image"),
        ("corrupt", "not a readable image"),
        ("gray", "grayscale"),
        ("rgba", "transparent pixels"),
        ("tiny", "too small"),
    ],
)
def test_bad_photo_leaves_out_untouched(generator, photos, tmp_path, photo, message):
    out = tmp_path / "out"
    _sample(generator, photos["astronaut"], out)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    with pytest.raises(UserError, match=message):
        _sample(generator, photos[photo], out, seed=5)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert os.listdir(tmp_path) == ["out"]  # no temporary folder left behind


def test_several_faces_largest_or_strict(generator, photos, tmp_path, capsys):
    summary = _sample(generator, photos["two_faces"], tmp_path / "a")
    # dlib finds both faces (and, at its 2x upsampling, sometimes more).
    assert summary["faces"] >= 2 and "faces found; using the largest" in capsys.readouterr().err
    with pytest.raises(UserError, match="--strict"):
        _sample(generator, photos["two_faces"], tmp_path / "b", strict=True)
    assert not (tmp_path / "b").exists()


def test_huge_photo_works(generator, photos, tmp_path):
    summary = _sample(generator, photos["huge"], tmp_path / "out", num_modes=1, metrics=True)
    assert summary["faces"] >= 1 and (tmp_path / "out" / "samples.npz").exists()
    # The face it chose is the astronaut's: same person as her photo.
    assert summary["metrics"]["identity_same_rate"] == 1.0


def test_bad_label_and_mode_count(generator, photos, tmp_path):
    with pytest.raises(UserError, match="unknown label 'happy'"):
        _sample(generator, photos["astronaut"], tmp_path / "a", label="happy")
    with pytest.raises(UserError, match="at least 1"):
        _sample(generator, photos["astronaut"], tmp_path / "b", num_modes=0)
    with pytest.raises(UserError, match="this model has 3 modes"):
        _sample(generator, photos["astronaut"], tmp_path / "c", num_modes=4)
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_a_foreign_folder(generator, photos, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not written by cmm_jax.sample"):
        _sample(generator, photos["astronaut"], tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_one_line_errors(tiny_workdir, photos, tmp_path):
    """The command line: one `error:` line and exit code 2, nothing written."""
    out = str(tmp_path / "out")
    cases = [
        (["--workdir", str(tmp_path / "nothing"), "--image", photos["astronaut"]], "no trained run"),
        (["--workdir", tiny_workdir, "--image", photos["no_face"]], "no face found"),
        (["--workdir", tiny_workdir, "--image", photos["astronaut"], "--num_modes=0"], "--num_modes must be at least 1"),
        (["--workdir", tiny_workdir, "--image", photos["astronaut"], "--label=joy"], "unknown label 'joy'"),
        (["--workdir", tiny_workdir, "--image", photos["astronaut"], "--fps=0"], "--fps must be in [1, 100]"),
        # A flag left out: absl would print "FATAL Flags parsing error" and exit with 1.
        (["--image", photos["astronaut"]], "Flag --workdir must have a value"),
    ]
    for args, message in cases:
        result = _run(*args, f"--out={out}")
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
        assert not os.path.exists(out)


def test_cli_incompatible_checkpoint(tiny_workdir, photos, tmp_path):
    """A checkpoint whose shapes do not match the run's config."""
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(tiny_workdir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["vae"]["latent_dim"] += 1
    (broken / "config.json").write_text(json.dumps(config))
    result = _run(f"--workdir={broken}", f"--image={photos['astronaut']}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_one_photo_defaults(tiny_workdir, photos, tmp_path):
    """One photo, no --size: 256-pixel frames with the generated points scaled
    to them (dlib finds them there), the face pasted back into the photo, and
    --metrics prints and writes the render fidelity."""
    out = tmp_path / "out"
    result = _run(f"--workdir={tiny_workdir}", f"--image={photos['neutral']}", f"--out={out}", "--num_modes=2",
                  "--metrics")
    assert result.returncode == 0, result.stderr
    saved = np.load(out / "samples.npz")
    assert saved["frames"].shape == (2, NUM_FRAMES, 256, 256, 3)
    assert iio.imread(out / "mode_0.mp4", plugin="pyav").shape[:3] == (NUM_FRAMES, 256, 256)
    assert iio.imread(out / "mode_1_photo.mp4", plugin="pyav").shape[1:3] == iio.imread(photos["neutral"]).shape[:2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["detection_rate"] >= 0.95 and metrics["landmark_nme"] < 0.08
    for key in ("render_fidelity_widening", "render_fidelity_opening", "landmark_jump_p99"):
        assert key in metrics and f'"{key}"' in result.stdout


def test_cli_batch_mode(tiny_workdir, photos, tmp_path):
    """A folder: one output folder per photo, failures listed, exit code 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    # astronaut.jpg and astronaut.png would share the folder "astronaut".
    for name in ("astronaut", "smiling", "two_faces", "no_face", "text"):
        os.symlink(photos[name], folder / os.path.basename(photos[name]))
    result = _run(f"--workdir={tiny_workdir}", f"--image={folder}", f"--out={tmp_path / 'out'}", "--num_modes=2",
                  "--size=64")
    assert result.returncode == 1, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["astronaut_jpg", "astronaut_png", "two"]
    # No paste-back in batch mode unless asked for.
    assert not [n for n in os.listdir(tmp_path / "out" / "astronaut_png") if n.endswith("_photo.mp4")]
    assert "3 of 5 photos done, 2 failed" in result.stdout
    # A row carries every warning printed about its photo in its message column.
    rows = [line for line in result.stdout.splitlines() if line.startswith(("astronaut_", "two "))]
    assert len(rows) == 3 and all("warning: lip corners" in row for row in rows), result.stdout
    assert "faces found; using the largest" in rows[2], result.stdout
    assert "coffee" in result.stdout and "no face found" in result.stdout and "notes" in result.stdout


def test_output_names_of_a_folder():
    assert sample.output_names(["in/a.jpg", "in/b.png"]) == ["a", "b"]
    assert sample.output_names(["in/face.jpg", "in/Face.PNG", "in/face_jpg.png", "in/x.y.jpg"]) == [
        "face_jpg", "Face_PNG", "face_jpg_2", "x.y"]


def test_a_folder_into_a_file_is_refused(generator, photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(photos["astronaut"], folder / "astronaut.jpg")
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a folder"):
        sample.sample_folder(generator, str(folder), str(tmp_path / "out"), label="posed", num_modes=1, seed=0,
                             size=64, fps=8.0)
    assert (tmp_path / "out").read_text() == "keep me"


# The input check: faces unlike the run's neutral training faces (cmm_jax.input_check).


class _OffsetAutoencoder:
    """A stand-in VAE: decodes every shape to itself shifted by a constant,
    so its reconstruction error depends on the inter-ocular distance only."""

    def encode(self, points):
        flat = np.asarray(points).reshape(*np.shape(points)[:-2], 136)
        return flat, np.zeros_like(flat)

    def decode(self, code):
        return np.asarray(code).reshape(*np.shape(code)[:-1], 68, 2) + 0.01


def _neutral_faces(count, seed=0):
    """Template faces in [-1, 1] with mouth widths +-5 % and a little noise."""
    rng = np.random.default_rng(seed)
    template = alignment.mean_neutral_shape().astype(np.float64)
    faces = np.repeat(template[None], count, axis=0)
    mouth = list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    center = template[mouth, 0].mean()
    faces[:, mouth, 0] = center + (faces[:, mouth, 0] - center) * rng.uniform(0.95, 1.05, (count, 1))
    faces += rng.normal(0.0, 0.05, faces.shape)
    return landmarks.normalize(faces).astype(np.float32)


def test_input_check_on_synthetic_faces(tmp_path):
    vae = _OffsetAutoencoder()
    stats = input_check.neutral_range(vae, _neutral_faces(200))
    assert stats["count"] == 200
    ratio = stats["mouth_ratio"]
    assert ratio["min"] <= ratio["low"] < ratio["median"] < ratio["high"] <= ratio["max"]
    assert 0.6 < ratio["median"] < 0.7 and abs(stats["corner_lift"]["median"]) < 0.01
    # Inside the range: nothing to say.
    neutral = landmarks.normalize(alignment.mean_neutral_shape()).astype(np.float32)
    assert input_check.check_input(vae, neutral, stats) == []
    # A mouth 20 % wider: one problem, naming the mouth width.
    wide = neutral.copy()
    mouth = list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    center = wide[mouth, 0].mean()
    wide[mouth, 0] = center + (wide[mouth, 0] - center) * 1.2
    problems = input_check.check_input(vae, wide, stats)
    assert len(problems) == 1 and problems[0].startswith("mouth width 0.78 inter-ocular distances, above")
    assert "may not be neutral" in problems[0]
    # Lip corners pulled up: one problem, naming them.
    lifted = neutral.copy()
    lifted[[landmarks.MOUTH_RIGHT, landmarks.MOUTH_LEFT], 1] -= 0.1 * landmarks.inter_ocular_distance(neutral)
    problems = input_check.check_input(vae, lifted, stats)
    assert len(problems) == 1 and problems[0].startswith("lip corners +0.10 inter-ocular distances above")
    # A shape the VAE reconstructs worse than every training face.
    strict_range = dict(stats, reconstruction_error=dict(stats["reconstruction_error"], low=0.0, high=0.001))
    problems = input_check.check_input(vae, neutral, strict_range)
    assert len(problems) == 1 and problems[0].startswith("VAE reconstruction error")
    assert "99.5 %" in problems[0] and "unusual face shape or pose" in problems[0]
    # input_range.json: written, read back; absent in older runs; refused when broken.
    assert run_dir.read_input_range(str(tmp_path)) is None
    run_dir.write_input_range(str(tmp_path), stats)
    assert run_dir.read_input_range(str(tmp_path)) == stats
    assert os.listdir(tmp_path) == ["input_range.json"]
    (tmp_path / "input_range.json").write_text("{}")
    with pytest.raises(UserError, match="no low/high of mouth_ratio"):
        run_dir.read_input_range(str(tmp_path))


class _HalfwayAutoencoder:
    """A stand-in VAE that decodes a shape half way back to the template: its
    reconstruction error grows with the shape's distance from the template."""

    template = landmarks.normalize(alignment.mean_neutral_shape()).astype(np.float32)

    def encode(self, points):
        return np.asarray(points), None

    def decode(self, code):
        return self.template + 0.5 * (np.asarray(code) - self.template)


def test_share_in_range_stops_where_the_error_leaves_the_range():
    vae, template = _HalfwayAutoencoder(), _HalfwayAutoencoder.template
    shape = template.copy()
    shape[list(landmarks.JAW)] += np.array([0.0, 0.2], np.float32)  # a longer jaw; the eyes stay
    error = input_check.reconstruction_error(vae, np.stack([template + 0.5 * (shape - template), shape]))
    assert error[1] == pytest.approx(2 * error[0])
    stats = {"reconstruction_error": {"low": 0.0, "high": float(error[0]) * 1.001}, "margin": 0.0}
    assert input_check.share_in_range(vae, shape, template, stats) == 0.5
    assert input_check.share_in_range(vae, template, template, stats) == 1.0
    stats["reconstruction_error"]["high"] = float(error[1])
    assert input_check.share_in_range(vae, shape, template, stats) == 1.0


def test_a_face_beyond_the_range_moves_by_the_smile_of_the_nearest_face_within(generator, photos, tmp_path, capsys):
    """Grace Hopper under a range no shape is within but the template: her
    smile is the template's, scaled to her eyes, on her own points; within the
    range, sampling is as it was without the check."""
    fit = face.find_face(files.read_photo(photos["neutral"]))
    neutral = sample.template_points(fit)
    unchecked = sample.Generator(generator.config, generator.info, generator.models, input_range=None)
    assert generator.motion_share(neutral) == 1.0
    np.testing.assert_array_equal(generator.landmark_sequences(neutral, 0, 0), unchecked.landmark_sequences(neutral, 0, 0))

    stats = generator.input_range
    tight = sample.Generator(generator.config, generator.info, generator.models, input_range=dict(
        stats, margin=0.0, reconstruction_error=dict(stats["reconstruction_error"], low=0.0, high=1e-9)))
    assert tight.motion_share(neutral) == 0.0
    template = alignment.mean_neutral_shape()
    own = tight.landmark_sequences(neutral, 0, 0)
    templates = unchecked.landmark_sequences(template, 0, 0)
    scale = landmarks.inter_ocular_distance(neutral) / landmarks.inter_ocular_distance(template)
    np.testing.assert_allclose(own[:, 0], np.broadcast_to(neutral, own[:, 0].shape), atol=1e-4)
    np.testing.assert_allclose(own - own[:, :1], (templates - templates[:, :1]) * scale, atol=1e-4)

    summary = _sample(tight, photos["neutral"], tmp_path / "out", num_modes=1)
    assert summary["motion_share"] == 0.0 and "0% of the way to it from the template" in capsys.readouterr().err
    assert np.load(tmp_path / "out" / "samples.npz")["motion_share"] == 0.0


def test_training_writes_the_input_range(tiny_workdir):
    stats = run_dir.read_input_range(tiny_workdir)
    assert stats is not None and stats["count"] > 0
    for name in input_check.MEASURES:
        assert stats[name]["low"] < stats[name]["median"] < stats[name]["high"]


def test_smiling_photo_warns_and_goes_on(generator, photos, tmp_path, capsys):
    out = tmp_path / "out"
    summary = _sample(generator, photos["smiling"], out)
    err = capsys.readouterr().err.splitlines()
    err = [line for line in err if "its smile is generated for the shape" not in line]  # (its shape, if unusual)
    assert summary["faces"] == 1 and err == [f"warning: {photos['smiling']}: {p}" for p in summary["input_check"]]
    assert summary["input_check"]
    lift = [p for p in summary["input_check"] if p.startswith("lip corners +0.1")]
    assert lift and lift[0].endswith("the face may not be neutral (the model adds a smile to it)")
    assert list(np.load(out / "samples.npz")["input_check"]) == summary["input_check"]
    assert os.path.exists(out / "mode_0.mp4")


def test_neutral_photo_does_not_warn(generator, photos, tmp_path, capsys):
    summary = _sample(generator, photos["neutral"], tmp_path / "out", num_modes=1)
    assert summary["input_check"] == [] and "warning:" not in capsys.readouterr().err
    assert list(np.load(tmp_path / "out" / "samples.npz")["input_check"]) == []


def test_run_without_input_range_samples_unchecked(tiny_workdir, photos, tmp_path, capsys):
    """Runs trained before input_range.json existed keep working, without the check."""
    old = tmp_path / "run"
    shutil.copytree(tiny_workdir, old)
    os.remove(old / "input_range.json")
    generator = sample.Generator.from_workdir(str(old))
    assert generator.input_range is None
    summary = _sample(generator, photos["smiling"], tmp_path / "out", num_modes=1, strict=True)
    assert summary["input_check"] is None and "warning:" not in capsys.readouterr().err


def test_cli_smiling_photo_warning_and_strict(tiny_workdir, photos, tmp_path):
    out = tmp_path / "out"
    result = _run(f"--workdir={tiny_workdir}", f"--image={photos['smiling']}", f"--out={out}", "--num_modes=1",
                  "--nopaste_back")
    assert result.returncode == 0, result.stderr
    assert "mode_0.mp4" in os.listdir(out) and "mode_0_photo.mp4" not in os.listdir(out)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and all(line.startswith(f"warning: {photos['smiling']}: ") for line in warnings), result.stderr
    assert "lip corners" in warnings[0]
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    # --strict: refused, one error line, exit code 2, OUT as it was.
    result = _run(f"--workdir={tiny_workdir}", f"--image={photos['smiling']}", f"--out={out}", "--num_modes=1",
                  "--strict", "--seed=3")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {photos['smiling']}: "), result.stderr
    assert "lip corners" in lines[0]
    assert lines[0].endswith("--strict refuses it")
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_evaluate_measures_the_run_samples_when_asked(tiny_workdir, tiny_data_dir, tmp_path):
    """With eval.render_metrics, evaluate adds dlib's figures on the run's own
    sample videos (the astronaut, every renderer) to eval.json as "render"."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_workdir, workdir)
    result = _run("--config=experiments/tiny.py", f"--workdir={workdir}",
                  f"--config.dataset.data_dir={tiny_data_dir}", "--config.eval.render_metrics=True",
                  "--config.eval.max_inputs=8", module="cmm_jax.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    render = json.loads((workdir / "eval.json").read_text())["render"]
    assert set(render) == {"astronaut_warp", "astronaut_translator"}
    for name, figures in render.items():
        assert figures["detection_rate"] >= 0.95
        assert {"render_fidelity_widening", "render_fidelity_opening", "identity_distance",
                "landmark_jump_p99"} <= set(figures)
        saved = json.loads((workdir / "samples" / name / "metrics.json").read_text())
        assert saved["detection_rate"] == pytest.approx(figures["detection_rate"], abs=1e-6)
