"""The face-dependence metrics can fail: generators that ignore the face are caught.

Everything here runs the evaluation's own code (baselines, scorer, the data's
law) on small smile_synth sets made in the test, with no trained model.
"""

import types

import numpy as np
import pytest

from cmm_jax import baselines, evaluate, landmarks, metrics
from cmm_jax.data import pipeline, synth

K = 5


def _split(offset, num_subjects):
    examples = [e for _, e in synth.generate_examples(0, num_subjects, 4, 32, 0.01, subject_offset=offset)]
    return dict(
        landmarks=landmarks.normalize(np.stack([e["landmarks"] for e in examples])),
        reference=landmarks.normalize(np.stack([e["clean_landmarks"] for e in examples])),
        label=np.array([e["label"] for e in examples]),
        style=np.array([e["style"] for e in examples]),
        subject=np.array([e["subject"] for e in examples]),
    )


@pytest.fixture(scope="module")
def setting():
    train, test = _split(0, 120), _split(1000, 12)
    law = evaluate.SyntheticLaw(types.SimpleNamespace(seed=0), 32)
    neutral, subjects = test["landmarks"][:, 0], test["subject"]
    info = pipeline.DatasetInfo(synth.CLASSES, synth.STYLES, 32)
    scorer = evaluate._Scorer({}, test, train, info, neutral, subjects, None)
    _, first = np.unique(subjects, return_index=True)
    first = np.sort(first)
    data_spread = metrics.face_spread(law.face_motion(subjects[first], 2, 10))
    return types.SimpleNamespace(train=train, test=test, law=law, neutral=neutral, subjects=subjects,
                                 scorer=scorer, first=first, data_spread=data_spread)


def _sensitivity(s, generated):
    return metrics.face_spread(metrics.displacements(generated[s.first])) / s.data_spread


def _one_person_for_everyone(s):
    """A cheat with perfect dynamics and the wrong face: K clips drawn from the
    data's law for the first test person, pasted on every input."""
    one = baselines.oracle(s.neutral[:1], s.subjects[:1], 2, K, s.law.draw_clean_clips)
    motion = metrics.displacements(one)[0]
    return baselines._onto(s.neutral, np.broadcast_to(motion, (len(s.neutral),) + motion.shape))


def test_face_blind_generators_fail_face_sensitivity(setting):
    blind = baselines.face_blind(setting.train, setting.neutral, 2, K)
    assert _sensitivity(setting, blind) < 0.01  # the bar is >= 0.5
    assert _sensitivity(setting, _one_person_for_everyone(setting)) < 0.01
    # Picking other people's clips by face is not face dependence either: far above the 2x bar.
    assert _sensitivity(setting, baselines.nearest_neighbour(setting.train, setting.neutral, 2, K)) > 2.0


def test_wrong_face_costs_conditional_error(setting):
    oracle = setting.scorer(baselines.oracle(setting.neutral, setting.subjects, 2, K, setting.law.draw_clean_clips))
    cheat = setting.scorer(_one_person_for_everyone(setting))
    blind = setting.scorer(baselines.face_blind(setting.train, setting.neutral, 2, K))
    # On smile_synth v2 the person decides only a few per cent of the best-of-K
    # error (most of a smile's variation is within a person: timing, style,
    # intensity), so these margins are small: 1.04x and 1.03x here.
    assert cheat["conditional_error"] > oracle["conditional_error"]
    assert blind["conditional_error"] > oracle["conditional_error"]


def test_draw_baselines_are_face_blind_and_handle_small_classes(setting):
    """The samplers' baselines: face_blind_draws ignores the face (sensitivity
    0) and copes with classes that have fewer clips than K, or none."""
    draws = baselines.face_blind_draws(setting.train, setting.neutral, 2, K)
    assert draws.shape == (len(setting.neutral), 2, K, 32, 68, 2)
    assert _sensitivity(setting, draws) < 0.01
    few = dict(setting.train, label=np.where(np.arange(len(setting.train["label"])) < 3, 1, 2))
    sparse = metrics.displacements(baselines.face_blind_draws(few, setting.neutral[:2], 2, K))
    assert np.all(sparse[:, 0] == 0)  # class 0 has no clips: the neutral face, held
    assert np.abs(sparse[:, 1]).max() > 0  # class 1 has 3 clips for K = 5 modes
    # Random clips of the person's own law are further from their held-out
    # clips than its K central ones: best-of-K rewards central outputs.
    law = (setting.neutral, setting.subjects, 2, K, setting.law.draw_clean_clips)
    central, drawn = setting.scorer(baselines.oracle(*law)), setting.scorer(baselines.oracle_draws(*law))
    assert drawn["conditional_error"] > 1.05 * central["conditional_error"]


def test_medoids_of_a_class_with_fewer_clips_than_modes():
    """Two clips and K = 5: five picks, the clips repeated in turn (face_blind and oracle stack them)."""
    motion = np.random.default_rng(0).normal(size=(2, 3, 68, 2)).astype(np.float32)
    picks = baselines.medoids(motion, K, np.random.default_rng(0))
    assert picks.shape == (K, 3, 68, 2)
    assert {tuple(p.ravel()[:3]) for p in picks} == {tuple(m.ravel()[:3]) for m in motion}
