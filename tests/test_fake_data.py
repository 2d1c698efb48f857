"""The fake UvA-NEMO and MUG copies: layout, decodability, and dlib vs the known points."""

import glob
import os
import re
import warnings

import numpy as np
import pytest

from cmm_jax import face, landmarks
from cmm_jax.data import action_units, fake

NUM_FRAMES = 16
MAX_NME = 0.08  # dlib's mean point error, in outer-eye-corner distances


@pytest.fixture(scope="module")
def uva(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("uva_nemo"))
    return root, fake.make_uva_nemo(root, subjects=("001", "002"), num_frames=NUM_FRAMES)


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mug"))
    return root, fake.make_mug(root, subjects=("001",), emotions=("happiness", "surprise"), num_frames=12)


def read_mp4(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path)
    with warnings.catch_warnings():  # ffmpeg starts with fork + exec; JAX's fork warning does not apply
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        meta = next(reader)
    width, height = meta["size"]
    frames = np.stack([np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader])
    return frames, meta


def nme(image, target):
    points = face.find_face(image).points
    return float(landmarks.point_error(points, target).mean() / landmarks.inter_ocular_distance(target))


def apex_frame(targets):
    """The frame whose points are farthest from frame 0."""
    return int(np.abs(targets - targets[0]).sum((1, 2)).argmax())


def test_expression_path():
    for kind in action_units.KINDS:
        path = action_units.expression_path(kind, 40, 50, seed=3)
        assert path.shape == (40, 68, 2)
        assert np.all(path[0] == 0.0), kind
        np.testing.assert_array_equal(path, action_units.expression_path(kind, 40, 50, seed=3))
        magnitude = np.linalg.norm(path, axis=-1).max()
        assert magnitude < 0.25, kind
        assert (magnitude > 0.05) == (kind != "neutral"), kind
    brows = list(landmarks.RIGHT_BROW + landmarks.LEFT_BROW)
    surprise = action_units.expression_path("surprise", 40, 50).max(0)
    assert action_units.expression_path("surprise", 40, 50)[:, brows, 1].mean(1).min() < -0.05  # brows go up
    assert surprise[8, 1] > 0.1  # jaw drops
    smile = action_units.expression_path("posed", 40, 50)
    assert smile[:, landmarks.MOUTH_RIGHT, 0].min() < -0.08 and smile[:, landmarks.MOUTH_LEFT, 0].max() > 0.08


def test_uva_nemo_layout(uva):
    root, result = uva
    names = sorted(os.listdir(root))
    assert names == sorted(stem + ".mp4" for stem in result["labels"])
    assert all(re.fullmatch(r"\d{3}_(deliberate|spontaneous)_smile_\d+\.mp4", name) for name in names)
    assert len(result["targets"]) == 4 and result["fps"] == 50
    assert result["corrupt"] == ["001_deliberate_smile_2"] and result["faceless"] == ["001_spontaneous_smile_2"]
    for stem, label in result["labels"].items():
        assert label == ("posed" if "_deliberate_" in stem else "spontaneous")
    for points in result["targets"].values():
        assert points.shape == (NUM_FRAMES, 68, 2) and points.dtype == np.float32


def test_uva_nemo_decodes_and_dlib_finds_the_known_points(uva):
    root, result = uva
    errors = {}
    for stem, targets in result["targets"].items():
        frames, meta = read_mp4(os.path.join(root, stem + ".mp4"))
        assert frames.shape == (NUM_FRAMES, 360, 640, 3)
        assert meta["fps"] == 50
        apex = apex_frame(targets)
        assert apex > 0
        errors[stem] = (nme(frames[0], targets[0]), nme(frames[apex], targets[apex]))
    worst = max(max(pair) for pair in errors.values())
    assert worst < MAX_NME, errors


def test_uva_nemo_bad_videos(uva):
    root, result = uva
    (corrupt,), (faceless,) = result["corrupt"], result["faceless"]
    with pytest.raises(OSError):  # imageio-ffmpeg: "Could not load meta information"
        read_mp4(os.path.join(root, corrupt + ".mp4"))
    frames, _ = read_mp4(os.path.join(root, faceless + ".mp4"))
    assert frames.shape == (NUM_FRAMES, 360, 640, 3)
    assert face.detect_faces(frames[0]) == [] and face.detect_faces(frames[NUM_FRAMES // 2]) == []


def test_mug(mug):
    from PIL import Image

    root, result = mug
    videos = sorted(os.path.relpath(p, os.path.join(root, "subjects3")) for p in glob.glob(f"{root}/subjects3/*/*/*"))
    assert videos == sorted(result["labels"])
    assert result["fps"] == 19
    assert result["corrupt"] == ["001/happiness/take001"] and result["faceless"] == ["001/happiness/take002"]
    for video in result["labels"]:
        assert re.fullmatch(r"\d{3}/(happiness|surprise)/take\d{3}", video)
        files = sorted(os.listdir(os.path.join(root, "subjects3", video)))
        assert files == [f"img_{i:04d}.jpg" for i in range(12)]

    def load(video, index):
        with Image.open(os.path.join(root, "subjects3", video, f"img_{index:04d}.jpg")) as image:
            image.load()
            return np.asarray(image.convert("RGB"))

    errors = {}
    for video, targets in result["targets"].items():
        assert result["labels"][video] == video.split("/")[1]
        apex = apex_frame(targets)
        first = load(video, 0)
        assert first.shape == (320, 320, 3)
        errors[video] = (nme(first, targets[0]), nme(load(video, apex), targets[apex]))
    assert max(max(pair) for pair in errors.values()) < MAX_NME, errors
    with pytest.raises(OSError):
        load(result["corrupt"][0], 0)
    assert face.detect_faces(load(result["faceless"][0], 0)) == []


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "uva")
    assert fake.main(["--dataset=uva_nemo", f"--out={out}", "--subjects=1", f"--frames={NUM_FRAMES}",
                      "--no-corrupt"]) == 0
    assert sorted(os.listdir(out)) == ["001_deliberate_smile_1.mp4", "001_spontaneous_smile_1.mp4",
                                       "001_spontaneous_smile_2.mp4"]
    assert "fake uva_nemo: 3 videos (2 good, 0 corrupt, 1 face-less)" in capsys.readouterr().out
