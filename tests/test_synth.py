"""The procedural smile model: determinism, shapes, alignment, class and style design, noise."""

import numpy as np
import pytest

from cmm_jax import face, landmarks
from cmm_jax.data import synth

STYLE = {name: i for i, name in enumerate(synth.STYLES)}
POSED, SPONTANEOUS = 0, 1


def clips(label, style, num=24, num_frames=32, noise_std=0.0, seed=0):
    """(num, T, 68, 2): one clip per random identity."""
    out = []
    for i in range(num):
        identity = synth.sample_identity(np.random.default_rng([seed, i]))
        points, drawn_style = synth.sample_clip(
            np.random.default_rng([seed, i, label, len(synth.STYLES) if style is None else style]),
            identity, label, style, num_frames=num_frames, noise_std=noise_std,
        )
        assert style is None or drawn_style == style
        out.append(points)
    return np.stack(out)


def test_priors():
    for name in synth.CLASSES:
        assert len(synth.STYLE_PRIORS[name]) == len(synth.STYLES)
        assert sum(synth.STYLE_PRIORS[name]) == pytest.approx(1.0)
    assert sum(p >= 0.1 for p in synth.STYLE_PRIORS["posed"]) == 3
    assert sum(p >= 0.1 for p in synth.STYLE_PRIORS["spontaneous"]) == 4


def test_examples_shapes_names_and_counts():
    examples = list(synth.generate_examples(seed=3, num_subjects=2, clips_per_class=3, num_frames=16, noise_std=0.01))
    assert len(examples) == 2 * 2 * 3
    keys = [key for key, _ in examples]
    assert len(set(keys)) == len(keys)
    for key, example in examples:
        assert example["landmarks"].shape == (16, 68, 2) and example["landmarks"].dtype == np.float32
        assert example["label"] in (0, 1) and 0 <= example["style"] < len(synth.STYLES)
        assert example["video"] == key
        assert key.startswith(example["subject"] + "_" + synth.CLASSES[example["label"]] + "_")
    assert {e["subject"] for _, e in examples} == {"synth_00000", "synth_00001"}
    for subject in ("synth_00000", "synth_00001"):
        assert sorted(e["label"] for _, e in examples if e["subject"] == subject) == [0, 0, 0, 1, 1, 1]


def test_deterministic_and_independent_of_generation_order():
    def as_dict(examples):
        return {key: example for key, example in examples}

    whole = as_dict(synth.generate_examples(7, 4, 2, 32, 0.01))
    again = as_dict(synth.generate_examples(7, 4, 2, 32, 0.01))
    tail = as_dict(synth.generate_examples(7, 2, 2, 32, 0.01, subject_offset=2))
    fewer_clips = as_dict(synth.generate_examples(7, 4, 1, 32, 0.01))
    other_seed = as_dict(synth.generate_examples(8, 4, 2, 32, 0.01))
    for key, example in whole.items():
        np.testing.assert_array_equal(example["landmarks"], again[key]["landmarks"])
        assert not np.allclose(example["landmarks"], other_seed[key]["landmarks"])
    for key, example in tail.items():
        np.testing.assert_array_equal(example["landmarks"], whole[key]["landmarks"])
        assert example["style"] == whole[key]["style"]
    for key, example in fewer_clips.items():
        np.testing.assert_array_equal(example["landmarks"], whole[key]["landmarks"])


def test_first_frame_is_aligned_neutral_face():
    template = face.mean_neutral_shape()
    index = list(landmarks.ALIGNMENT_POINTS)
    for label in (POSED, SPONTANEOUS):
        points = clips(label, None, num=16)
        for clip in points:
            # The clip's own alignment is already applied: the fit is the identity.
            fit = landmarks.fit_similarity(clip[0, index], template[index])
            np.testing.assert_allclose(fit, [[1, 0, 0], [0, 1, 0]], atol=1e-3)
            # People differ from the template, but not by much at these points.
            assert np.abs(clip[0, index] - template[index]).max() < 2.0
            # Frame 0 is neutral: the neutral hold lasts at least until frame 1.
            np.testing.assert_allclose(clip[1], clip[0], atol=0.35)


def mouth_width(points):
    return landmarks.point_error(points[..., 54, :], points[..., 48, :])


def rise_frames(curve):
    """Frames from 10 % to 90 % of the first rise of curve (T,) above curve[0]."""
    rise = (curve - curve[0]) / (curve.max() - curve[0])
    return int(np.argmax(rise >= 0.9) - np.argmax(rise >= 0.1))


def test_posed_onsets_are_faster_than_spontaneous():
    posed = [rise_frames(mouth_width(c)) for c in clips(POSED, None)]
    spontaneous = [rise_frames(mouth_width(c)) for c in clips(SPONTANEOUS, None)]
    assert max(posed) < min(spontaneous)
    # Durations scale with the clip length.
    short = [rise_frames(mouth_width(c)) for c in clips(SPONTANEOUS, None, num_frames=16)]
    assert np.mean(short) == pytest.approx(np.mean(spontaneous) / 2, abs=1.0)


def test_spontaneous_smiles_narrow_the_eyes_posed_closed_lip_barely():
    def lower_lid_rise(points):
        lids = points[:, :, [40, 41, 46, 47], 1].mean(-1)
        return (lids[:, :1] - lids).max(1)  # upward = smaller y

    posed = lower_lid_rise(clips(POSED, STYLE["closed_lip"]))
    spontaneous = lower_lid_rise(clips(SPONTANEOUS, STYLE["closed_lip"]))
    assert np.median(spontaneous) > 1.4 * np.median(posed)


def test_posed_smiles_are_more_asymmetric():
    def corner_asymmetry(points):
        """|log| of the ratio of the two lip corners' largest movements. (N, T, 68, 2) -> (N,)."""
        # Movement against the nose and inner eye corners, so head motion cancels.
        reference = points[:, :, [27, 28, 29, 30, 39, 42]].mean(2, keepdims=True)
        moves = (points - reference) - (points - reference)[:, :1]
        right = np.linalg.norm(moves[:, :, 48], axis=-1).max(1)
        left = np.linalg.norm(moves[:, :, 54], axis=-1).max(1)
        return np.abs(np.log(left / right))

    posed = corner_asymmetry(clips(POSED, STYLE["closed_lip"], num=40))
    spontaneous = corner_asymmetry(clips(SPONTANEOUS, STYLE["closed_lip"], num=40))
    assert posed.mean() > 1.3 * spontaneous.mean()
    one_sided = corner_asymmetry(clips(POSED, STYLE["one_sided"], num=40))
    assert one_sided.min() > 3 * posed.mean()


@pytest.mark.parametrize("label", [POSED, SPONTANEOUS])
def test_styles_move_the_face_as_designed(label):
    iod = landmarks.inter_ocular_distance(face.mean_neutral_shape())

    def peak(measure, style):
        values = measure(clips(label, STYLE[style]))  # (N, T)
        return np.median((values - values[:, :1]).max(1)) / iod

    def chin_drop(p):
        return p[..., 8, 1] - p[..., 27, 1]  # against the nose bridge: head motion cancels

    def inner_lip_gap(p):
        return p[..., 66, 1] - p[..., 62, 1]

    def eye_closing(p):  # minus the eye opening
        return -(p[..., [40, 41, 46, 47], 1] - p[..., [38, 37, 43, 44], 1]).mean(-1)

    # Mouth widens in every style, by a clearly visible amount.
    for style in synth.STYLES:
        assert peak(mouth_width, style) > 0.08
    assert peak(chin_drop, "broad_laugh") > 0.2
    assert peak(chin_drop, "closed_lip") < 0.03 and peak(chin_drop, "open_lip") < 0.08
    assert peak(inner_lip_gap, "open_lip") > 0.07 and peak(inner_lip_gap, "broad_laugh") > 0.25
    assert peak(inner_lip_gap, "closed_lip") < 0.02
    neutral_opening = -eye_closing(face.mean_neutral_shape()) / iod
    assert peak(eye_closing, "eyes_closing") > 0.7 * neutral_opening
    assert peak(eye_closing, "closed_lip") < 0.6 * neutral_opening


def test_noise_std_is_as_configured():
    identity = synth.sample_identity(np.random.default_rng(0))
    clean, _ = synth.sample_clip(np.random.default_rng(1), identity, POSED, noise_std=0.0)
    noisy, _ = synth.sample_clip(np.random.default_rng(1), identity, POSED, noise_std=0.02)
    iod = landmarks.inter_ocular_distance(face.mean_neutral_shape())
    noise = noisy - clean
    assert noise.mean() == pytest.approx(0.0, abs=0.01)
    assert noise.std() == pytest.approx(0.02 * iod, rel=0.05)
