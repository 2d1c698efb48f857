"""The per-video preprocessing: tracking and re-detection, smoothing, image folders."""

import numpy as np
import pytest
from PIL import Image

from cmm_jax import landmarks
from cmm_jax.data import fake, preprocess

SIZE = 200  # face crop pasted into the frames


@pytest.fixture(scope="module")
def face_crop():
    return fake.base_face(SIZE)


def _frames(face_crop, positions, frame_size=(640, 360)):
    """Frames with the face crop pasted at each (x, y); and its points there."""
    crop, points = face_crop
    frames, truth = [], []
    for x, y in positions:
        frame = fake.background(frame_size).copy()
        frame[y : y + SIZE, x : x + SIZE] = crop
        frames.append(frame)
        truth.append(points + np.array([x, y], np.float32))
    return frames, np.stack(truth)


def _nme(found, truth):
    return float(landmarks.point_error(found, truth).mean() / landmarks.inter_ocular_distance(truth[0]))


def test_tracking_follows_small_motion_with_one_detection(face_crop):
    frames, truth = _frames(face_crop, [(100 + 3 * t, 80 + t) for t in range(8)])
    tracker = preprocess.Tracker(detect_every=0)
    found = np.stack([tracker(f) for f in frames])
    assert tracker.detections == 1
    assert _nme(found, truth) < 0.05


def test_a_jump_degrades_the_fit_and_triggers_re_detection(face_crop):
    # The face jumps 150 px between frames 3 and 4: the fit in the old box fails.
    frames, truth = _frames(face_crop, [(60, 80)] * 4 + [(210, 80)] * 4)
    tracker = preprocess.Tracker(detect_every=0)
    found = np.stack([tracker(f) for f in frames])
    assert tracker.detections >= 2
    assert _nme(found[4:], truth[4:]) < 0.05


def test_detect_every_n_frames(face_crop):
    frames, _ = _frames(face_crop, [(100, 80)] * 7)
    tracker = preprocess.Tracker(detect_every=3)
    for frame in frames:
        tracker(frame)
    assert tracker.detections == 3  # frames 0, 3, 6
    per_frame = preprocess.Tracker(detect_every=1)
    for frame in frames:
        per_frame(frame)
    assert per_frame.detections == 7


def test_smoothing_removes_jitter_and_keeps_a_still_face():
    rng = np.random.default_rng(0)
    still = np.broadcast_to(fake.base_face(64)[1], (20, 68, 2)).astype(np.float32)
    assert np.allclose(preprocess.smooth(still, 2.0), still, atol=1e-4)
    noisy = still + rng.normal(0, 0.5, still.shape).astype(np.float32)
    assert np.abs(preprocess.smooth(noisy, 2.0) - still).mean() < 0.5 * np.abs(noisy - still).mean()
    assert preprocess.smooth(noisy, 0.0) is noisy


def test_image_folder_is_subsampled_and_shrunk(tmp_path, face_crop):
    frames, _ = _frames(face_crop, [(100 + t, 80) for t in range(20)], frame_size=(640, 480))
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i:04d}.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")
    video = preprocess.Video(id="take", path=str(tmp_path), label="x", subject="001", fps=20.0)
    options = preprocess.Options(num_frames=8, fps=10.0, max_side=320)
    decoded = preprocess.Frames(video, options)
    out = list(decoded)
    assert len(out) == 8  # every second image, 20 fps -> 10 fps
    assert out[0].shape == (240, 320, 3) and decoded.scale == 0.5
    # Frame k is image 2k: the face has moved 2k pixels, 1k at half size.
    assert np.abs(out[3].astype(int) - np.asarray(Image.fromarray(frames[6]).reduce(2)).astype(int)).mean() < 4


def test_process_video_pads_short_clips_and_refuses_very_short_ones(tmp_path, face_crop):
    frames, _ = _frames(face_crop, [(100, 80)] * 6)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i:04d}.png")
    video = preprocess.Video(id="take", path=str(tmp_path), label="x", subject="001", fps=10.0)
    result = preprocess.process_video(video, preprocess.Options(num_frames=8, fps=10.0, min_frames=4))
    assert result["frames"].shape == (8, 64, 64, 3) and result["num_source_frames"] == 6
    assert np.array_equal(result["frames"][6], result["frames"][5])  # the last frame held
    with pytest.raises(preprocess.VideoError, match="too short"):
        preprocess.process_video(video, preprocess.Options(num_frames=8, fps=10.0, min_frames=7))


def test_balanced_test_subjects_hit_the_protocol_count():
    from cmm_jax.data import video_dataset

    rng = np.random.default_rng(0)
    # 400 subjects with 1-4 videos each, 1240 in all, like UvA-NEMO.
    counts = np.full(400, 3)
    counts[rng.choice(400, 40, replace=False)] = 4
    videos = [
        preprocess.Video(id=f"{s:03d}_{k}", path="", label="posed", subject=f"{s:03d}")
        for s in range(1, 401) for k in range(counts[s - 1])
    ]
    assert len(videos) == 1240
    subjects = video_dataset.balanced_test_subjects(videos, 124)
    assert sum(v.subject in subjects for v in videos) == 124
    assert subjects == video_dataset.balanced_test_subjects(list(reversed(videos)), 124)  # order-free
    # No exact fit: the closest below; never an empty test split.
    three = [preprocess.Video(id=f"{s}{k}", path="", label="posed", subject=s) for s in "abc" for k in range(3)]
    assert len(video_dataset.balanced_test_subjects(three, 5)) == 1
    assert len(video_dataset.balanced_test_subjects(three, 2)) == 1


def test_a_frame_without_a_face_midway_is_tracked_through(face_crop):
    frames, truth = _frames(face_crop, [(100, 80)] * 5)
    frames[2] = fake.background((640, 360)).copy()  # the face is gone for one frame
    for detect_every in (0, 1):
        tracker = preprocess.Tracker(detect_every=detect_every)
        found = np.stack([tracker(f) for f in frames])  # never raises after frame 0
        assert _nme(found[3:], truth[3:]) < 0.05
