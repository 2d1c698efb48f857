"""UvA-NEMO and MUG from fake copies in their real layouts, end to end.

The copies (cmm_jax.data.fake) are a real face photo warped along known
landmark paths, both classes, plus one corrupt and one face-less video each.
Built through our CLI (python -m cmm_jax.data.prepare) and TFDS's own build
command; the records' landmarks are compared with the known points; an
interrupted preprocessing run is finished by the next; and
python -m cmm_jax.main trains a few steps of every stage on each.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cmm_jax import landmarks
from cmm_jax.data import fake, preprocess, video_dataset
from cmm_jax.configuration import STAGE_ORDER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small clips: 8 frames at 10 fps (the 50 fps fake UvA-NEMO videos have 40
# frames, the 19 fps MUG takes 24 images).
OPTIONS = {"num_frames": 8, "fps": 10.0, "min_frames": 4}
MAX_NME = 0.05  # records' landmarks against the known points, inter-ocular units
# Subjects: 005 is a UvA-NEMO test subject, 002 a MUG one (test_subjects.txt).
UVA_SUBJECTS = ("001", "002", "005")
MUG_SUBJECTS = ("001", "002", "003")


def run(args, timeout=600, check=True):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def prepare(dataset, manual_dir, data_dir, workers=1, check=True):
    flags = [f"--{k}={v}" for k, v in OPTIONS.items()]
    return run(
        ["-m", "cmm_jax.data.prepare", f"--dataset={dataset}", f"--manual_dir={manual_dir}",
         f"--data_dir={data_dir}", f"--workers={workers}", *flags],
        check=check,
    )


@pytest.fixture(scope="module")
def uva(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("uva_nemo_videos"))
    return root, fake.make_uva_nemo(root, subjects=UVA_SUBJECTS, num_frames=40)


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mug_images"))
    return root, fake.make_mug(root, subjects=MUG_SUBJECTS, emotions=("happiness", "surprise"), num_frames=24)


@pytest.fixture(scope="module")
def uva_data(tmp_path_factory, uva):
    data_dir = str(tmp_path_factory.mktemp("tfds_uva"))
    result = prepare("uva_nemo", uva[0], data_dir, workers=2)
    return data_dir, result


@pytest.fixture(scope="module")
def mug_data(tmp_path_factory, mug):
    data_dir = str(tmp_path_factory.mktemp("tfds_mug"))
    result = prepare("mug", mug[0], data_dir, workers=2)
    return data_dir, result


def _builder(dataset, data_dir):
    module = __import__(f"datasets.{dataset}.{dataset}_dataset_builder", fromlist=["build"])
    return module.build(data_dir, **OPTIONS)  # prepared: needs no manual_dir


def _records(builder):
    return {
        split: [builder.as_data_source(split)[i] for i in range(len(builder.as_data_source(split)))]
        for split in ("train", "test")
    }


def _check_dataset(dataset, data_dir, made, clip_indices, test_subject):
    builder = _builder(dataset, data_dir)
    records = _records(builder)
    names = builder.info.features["label"].names
    cache = os.path.join(data_dir, "downloads", "preprocessed", dataset, builder.builder_config.name)
    errors = []
    seen = []
    for split, examples in records.items():
        for example in examples:
            video = example["video"].decode()
            seen.append(video)
            subject = example["subject"].decode()
            assert (subject == test_subject) == (split == "test"), (video, split)
            assert names[example["label"]] == made["labels"][video]
            assert example["frames"].shape == (8, 64, 64, 3) and example["frames"].dtype == np.uint8
            assert example["landmarks"].shape == (8, 68, 2)
            # The known points of the clip's frames, mapped by the record's alignment.
            with np.load(preprocess.result_path(cache, video)) as result:
                matrix = result["matrix"].astype(np.float64)
            known = landmarks.apply_affine(matrix, made["targets"][video][clip_indices])
            errors.append(
                landmarks.point_error(example["landmarks"], known).mean() / landmarks.inter_ocular_distance(known[0])
            )
            # The crop is the face: its mean colour is not the background's.
            assert example["frames"].std() > 20
    # Every good video once; the bad ones nowhere.
    assert sorted(seen) == sorted(made["targets"])
    nme = float(np.mean(errors))
    print(f"{dataset}: {len(seen)} records, landmark NME vs known points {nme:.4f} (max {max(errors):.4f})")
    assert nme < MAX_NME and max(errors) < 2 * MAX_NME

    with open(os.path.join(builder.data_dir, "preprocessing_report.json")) as f:
        report = json.load(f)
    skipped = {s["video"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == set(made["corrupt"]) | set(made["faceless"])
    for video in made["corrupt"]:
        assert "decod" in skipped[video]
    for video in made["faceless"]:
        assert "no face" in skipped[video]
    assert report["usable"] == len(made["targets"])
    return nme


def test_uva_nemo_records_hold_aligned_frames_and_landmarks(uva, uva_data):
    root, made = uva
    data_dir, result = uva_data
    # 10 fps from 50 fps: every fifth source frame.
    _check_dataset("uva_nemo", data_dir, made, np.arange(8) * 5, "005")
    assert "skipped" in result.stderr and "frames/s" in result.stderr  # report and progress on the terminal
    for video in made["corrupt"] + made["faceless"]:
        assert video in result.stderr


def test_mug_records_hold_aligned_frames_and_landmarks(mug, mug_data):
    root, made = mug
    data_dir, _ = mug_data
    indices = np.round(np.arange(8) * fake.MUG_FPS / OPTIONS["fps"]).astype(int)
    _check_dataset("mug", data_dir, made, indices, "002")
    builder = _builder("mug", data_dir)
    assert builder.info.features["label"].names == list(
        ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    )


def test_tfds_build_command_makes_the_same_dataset(mug, tmp_path):
    """TFDS's own `build` command (without TensorFlow), a custom config as JSON."""
    root, made = mug
    from datasets.mug.mug_dataset_builder import Builder

    config = video_dataset.make_config(Builder.CONFIG_CLASS, Builder.BUILDER_CONFIGS, **OPTIONS)
    as_json = json.dumps({"name": config.name, **OPTIONS})
    run(["-m", "cmm_jax.data.tfds_cli", "build", "datasets/mug", f"--manual_dir={root}",
         f"--data_dir={tmp_path}", f"--config={as_json}"])
    builder = _builder("mug", str(tmp_path))  # found prepared under the name our configs use
    records = _records(builder)
    assert sorted(e["video"].decode() for s in records.values() for e in s) == sorted(made["targets"])


def test_interrupted_preprocessing_finishes_without_redoing(uva, tmp_path):
    """Kill preprocessing after two videos; the next run does only the rest."""
    root, made = uva
    data_dir = str(tmp_path / "tfds")
    from datasets.uva_nemo.uva_nemo_dataset_builder import Builder

    config_name = video_dataset.make_config(Builder.CONFIG_CLASS, Builder.BUILDER_CONFIGS, **OPTIONS).name
    cache = os.path.join(data_dir, "downloads", "preprocessed", "uva_nemo", config_name)
    flags = [f"--{k}={v}" for k, v in OPTIONS.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "cmm_jax.data.prepare", "--dataset=uva_nemo", f"--manual_dir={root}",
         f"--data_dir={data_dir}", "--workers=1", *flags],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    done = lambda: glob.glob(os.path.join(cache, "*.npz")) + glob.glob(os.path.join(cache, "*.failed.json"))  # noqa: E731
    deadline = time.time() + 300
    while len(done()) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {path: os.stat(path).st_mtime_ns for path in done()}
    total = len(made["targets"]) + len(made["corrupt"]) + len(made["faceless"])
    assert 2 <= len(before) < total, "the run was not stopped midway"
    for path in before:  # whole files only (a killed write leaves at most a .tmp file)
        if path.endswith(".npz"):
            with np.load(path) as result:
                assert result["frames"].shape == (8, 64, 64, 3)

    stale = os.path.join(cache, ".001_spontaneous_smile_1.npz.0123abcd.tmp.npz")
    open(stale, "wb").close()  # as a write killed midway leaves
    result = prepare("uva_nemo", root, data_dir)
    assert f"{len(before)} done before, {total - len(before)} to go" in result.stderr
    assert not os.path.exists(stale)
    for path, mtime in before.items():
        assert os.stat(path).st_mtime_ns == mtime, f"{path} was redone"
    builder = _builder("uva_nemo", data_dir)
    videos = [e["video"].decode() for s in _records(builder).values() for e in s]
    assert sorted(videos) == sorted(made["targets"])  # all there, none twice


def test_missing_manual_dir_is_one_clear_line(tmp_path):
    result = run(
        ["-m", "cmm_jax.data.prepare", "--dataset=uva_nemo", f"--data_dir={tmp_path}"], check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: uva_nemo") and "manual_dir" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(
        ["-m", "cmm_jax.data.prepare", "--dataset=mug", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path}"],
        check=False,
    )
    assert result.returncode == 2 and "no mug videos found" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "a_file").write_text("")  # where the data (and the cache) cannot go
    result = run(
        ["-m", "cmm_jax.data.prepare", "--dataset=mug", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path / 'a_file'}"],
        check=False,
    )
    assert result.returncode == 1 and "error: Not a directory" in result.stderr and "Traceback" not in result.stderr


def _tiny_overrides(data_dir, manual_dir):
    overrides = {
        "dataset.data_dir": data_dir,
        "dataset.manual_dir": manual_dir,
        **{f"dataset.builder_kwargs.{k}": v for k, v in OPTIONS.items()},
        "num_modes": 2,
        "log_every": 2,
        "checkpoint_every": 4,
        "vae.latent_dim": 8,
        "vae.hidden": 32,
        "classifier.hidden": 16,
        "classifier.features": 16,
        "judge.hidden": 16,
        "judge.features": 16,
        "recurrent.hidden": 16,
        "multimode.hidden": 16,
        "translator.features": 8,
        "translator.disc_features": 8,
        "translator.frames_per_clip": 2,
        "eval.num_sample_inputs": 1,
    }
    for stage in STAGE_ORDER:
        overrides[f"{stage}.steps"] = 4
        overrides[f"{stage}.batch_size"] = 2
    return [f"--config.{k}={v}" for k, v in overrides.items()]


def test_main_trains_every_stage_on_the_fake_copy(mug, mug_data, tmp_path):
    """`cmm_jax.main` on MUG's fake copy. UvA-NEMO's run of the same command is
    tests/test_notebooks.py::test_train_real_data: the notebook runs it on a fake
    copy with these settings, and the test checks the same."""
    workdir = str(tmp_path / "run")
    run(["-m", "cmm_jax.main", "--config=experiments/mug.py", f"--workdir={workdir}",
         *_tiny_overrides(mug_data[0], mug[0])], timeout=900)
    with open(os.path.join(workdir, "dataset_info.json")) as f:
        info = json.load(f)
    assert len(info["class_names"]) == 6
    assert info["frame_size"] == 64 and info["num_frames"] == 8
    for stage in STAGE_ORDER:
        assert os.listdir(os.path.join(workdir, "checkpoints", stage))
    with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
    assert 0.0 <= results["class_accuracy"] <= 1.0 and np.isfinite(results["vae_nme"])


def test_write_split_lists_test_subjects_from_the_folder(uva, tmp_path):
    from cmm_jax.data import prepare
    from datasets.uva_nemo import uva_nemo_dataset_builder as module

    root, made = uva
    path = str(tmp_path / "test_subjects.txt")
    prepare.write_split(module, root, path)
    subjects = video_dataset.read_subject_list(path)
    assert len(subjects) == 1 and subjects[0] in UVA_SUBJECTS  # 10 % of 8 videos: the smallest subject
    again = str(tmp_path / "again.txt")
    prepare.write_split(module, root, again)
    assert video_dataset.read_subject_list(again) == subjects  # same folder, same split
