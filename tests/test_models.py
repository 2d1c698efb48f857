"""Shapes and the defining properties of each network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ml_collections import ConfigDict

from cmm_jax.data.pipeline import DatasetInfo
from cmm_jax.inference import generate
from cmm_jax.models.classifier import SequenceClassifier
from cmm_jax.models.judge import SequenceJudge
from cmm_jax.models.multimode import ModeIdentifier, MultiModeGenerator
from cmm_jax.models.recurrent import ConditionalRecurrent, NoisePosterior
from cmm_jax.models.vae import LandmarkVAE
from cmm_jax.stages import (
    STAGES,
    balanced_assignment_weights,
    gaussian_kl,
    matched_embeddings,
    multimode_losses,
    recurrent_loss,
    vae_loss,
    winner_takes_all_weights,
)
from experiments import tiny

B, T, D, K, C = 3, 6, 8, 4, 2


def _sequences(seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (B, T, 68, 2), minval=-0.8, maxval=0.8)


def test_vae_shapes_and_loss():
    vae = LandmarkVAE(D, 32, rngs=nnx.Rngs(0))
    points = _sequences()[:, 0]
    mean, log_var = vae.encode(points)
    assert mean.shape == log_var.shape == (B, D)
    assert vae.decode(mean).shape == (B, 68, 2)
    loss, metrics = vae_loss(vae, points, jax.random.PRNGKey(1), beta=1e-3)
    assert np.isfinite(loss) and metrics["kl"] >= 0


def test_recurrent_starts_at_the_input_and_depends_on_class_and_noise():
    model = ConditionalRecurrent(D, C, 4, 16, rngs=nnx.Rngs(0))
    z0 = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    noise = jax.random.normal(jax.random.PRNGKey(1), (B, T - 1, 4))
    zs = model(z0, jnp.zeros(B, jnp.int32), noise)
    assert zs.shape == (B, T, D)
    np.testing.assert_array_equal(zs[:, 0], z0)
    other_class = model(z0, jnp.ones(B, jnp.int32), noise)
    other_noise = model(z0, jnp.zeros(B, jnp.int32), noise + 1.0)
    assert not np.allclose(zs[:, 1:], other_class[:, 1:])
    assert not np.allclose(zs[:, 1:], other_noise[:, 1:])


def test_relative_input_sees_the_face_through_the_initial_state_only():
    """recurrent.relative_input: with the initial state made face-blind, two
    faces get the same motion (z_t - z_0); the default net's steps read z_t
    itself, so theirs differ."""
    z0 = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    moved = z0 + jax.random.normal(jax.random.PRNGKey(2), (B, D))
    noise = jax.random.normal(jax.random.PRNGKey(1), (B, T - 1, 4))
    label = jnp.zeros(B, jnp.int32)
    for relative in (True, False):
        model = ConditionalRecurrent(D, C, 4, 16, relative_input=relative, rngs=nnx.Rngs(0))
        model.init_state.kernel[...] = jnp.zeros_like(model.init_state.kernel[...])
        motion = [np.asarray(zs - zs[:, :1]) for zs in (model(z0, label, noise), model(moved, label, noise))]
        assert np.allclose(*motion, atol=1e-5) == relative


def test_face_noise_moves_what_the_net_reads_not_where_the_sequence_starts():
    """recurrent.face_noise: a face offset changes the steps but not z_0; a
    zero offset is no offset; the loss draws a new offset with its rng."""
    model = ConditionalRecurrent(D, C, 4, 16, rngs=nnx.Rngs(0))
    z0 = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    noise = jax.random.normal(jax.random.PRNGKey(1), (B, T - 1, 4))
    label = jnp.zeros(B, jnp.int32)
    plain = model(z0, label, noise)
    np.testing.assert_array_equal(model(z0, label, noise, jnp.zeros_like(z0)), plain)
    offset = model(z0, label, noise, jnp.ones_like(z0))
    np.testing.assert_array_equal(offset[:, 0], z0)
    assert not np.allclose(offset[:, 1:], plain[:, 1:])
    target = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
    losses = [recurrent_loss(model, target, label, jax.random.PRNGKey(3), 2, face_noise)[0] for face_noise in (0, 0.5)]
    assert losses[0] != losses[1]


def test_variety_loss_keeps_the_best_noise_draw():
    model = ConditionalRecurrent(D, C, 4, 16, rngs=nnx.Rngs(0))
    target = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    label = jnp.zeros(B, jnp.int32)
    best, metrics = recurrent_loss(model, target, label, jax.random.PRNGKey(1), num_samples=8)
    assert best < metrics["mean_sample_loss"]
    single, metrics = recurrent_loss(model, target, label, jax.random.PRNGKey(1), num_samples=1)
    assert single == pytest.approx(metrics["mean_sample_loss"])


def test_multimode_modes_are_vectorised_and_start_at_the_neutral_face():
    generator = MultiModeGenerator(K, D, C, 16, rngs=nnx.Rngs(0))
    # One parameter set per mode, stacked on a leading axis (vmap, not a loop).
    kernel = generator.decoders.to_displacement.kernel[...]
    assert kernel.shape[0] == K
    embeddings = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    neutral = _sequences()[:, 0]
    out = generator(embeddings, neutral, jnp.zeros(B, jnp.int32))
    assert out.shape == (B, K, T, 68, 2)
    np.testing.assert_array_equal(out[:, :, 0], jnp.broadcast_to(neutral[:, None], (B, K, 68, 2)))
    # Different parameters per mode -> different sequences.
    assert not np.allclose(out[:, 0, 1:], out[:, 1, 1:])


def test_motion_only_decoders_read_the_change_of_the_embedding():
    """multimode.motion_only: an embedding sequence moved as a whole (another
    face's embedding, the same motion) decodes to the same sequence; the
    default decoders read the embedding itself too."""
    embeddings = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    moved = embeddings + jax.random.normal(jax.random.PRNGKey(1), (B, 1, D))
    neutral, label = _sequences()[:, 0], jnp.zeros(B, jnp.int32)
    for motion_only in (True, False):
        generator = MultiModeGenerator(K, D, C, 16, rngs=nnx.Rngs(0), motion_only=motion_only)
        same = np.allclose(generator(embeddings, neutral, label), generator(moved, neutral, label), atol=1e-5)
        assert same == motion_only


def test_winner_takes_all_weights():
    errors = jnp.array([[3.0, 1.0, 2.0], [0.5, 4.0, 9.0]])
    weights = winner_takes_all_weights(errors, relaxation=0.1)
    np.testing.assert_allclose(weights, [[0.05, 0.9, 0.05], [0.9, 0.05, 0.05]], rtol=1e-6)
    np.testing.assert_allclose(winner_takes_all_weights(errors[:, :1], 0.1), 1.0)


def test_balanced_assignment_gives_every_mode_its_share_of_each_class():
    # Mode 0 is best for every sequence: plain WTA would starve modes 1 and 2.
    rng = np.random.default_rng(0)
    errors = jnp.asarray(rng.uniform(1.0, 2.0, (12, 3)), jnp.float32)
    errors = errors.at[:, 0].set(0.5)
    label = jnp.array([0] * 6 + [1] * 6)
    weights = balanced_assignment_weights(errors, label, 2, temperature=0.05, iterations=200)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    for c in (0, 1):
        np.testing.assert_allclose(weights[label == c].sum(0), 2.0, rtol=1e-3)
    # Within the capacity, sequences still go where they are explained best:
    # the sequence on which mode 1 is worst does not go to mode 1.
    assert int(jnp.argmax(weights[int(jnp.argmax(errors[:6, 1]))])) != 1


def test_multimode_losses_reward_a_mode_that_matches():
    target = _sequences(1)
    far = jnp.broadcast_to(target[:, None] + 0.5, (B, K, T, 68, 2))
    one_right = far.at[:, 2].set(target)
    config = ConfigDict(dict(assignment="wta", assignment_temperature=0.05, wta_relaxation=0.0, mode_id_weight=0.0, class_weight=0.0))
    identifier = ModeIdentifier(K, 8, 8, rngs=nnx.Rngs(0))
    classifier = SequenceClassifier(C, 0, 8, 8, rngs=nnx.Rngs(0))
    label = jnp.zeros(B, jnp.int32)
    wta_loss, _ = multimode_losses(one_right, target, label, identifier, classifier, config)
    assert wta_loss == pytest.approx(0.0, abs=1e-6)
    config.assignment = "mean"
    mean_loss, _ = multimode_losses(one_right, target, label, identifier, classifier, config)
    assert mean_loss > 0.1


def test_classifier_heads():
    model = SequenceClassifier(C, 5, 16, 8, rngs=nnx.Rngs(0))
    out = model(_sequences())
    assert out["features"].shape == (B, 8)
    assert out["class_logits"].shape == (B, C)
    assert out["style_logits"].shape == (B, 5)
    assert "style_logits" not in SequenceClassifier(C, 0, 16, 8, rngs=nnx.Rngs(0))(_sequences())


def test_matched_embeddings_pick_the_closest_draw():
    vae = LandmarkVAE(D, 32, rngs=nnx.Rngs(0))
    recurrent = ConditionalRecurrent(D, C, 4, 16, rngs=nnx.Rngs(1))
    sequences, label = _sequences(), jnp.zeros(B, jnp.int32)
    rng = jax.random.PRNGKey(2)
    chosen = matched_embeddings(vae, recurrent, sequences, label, rng, num_samples=6)
    assert chosen.shape == (B, T, D)
    target, _ = vae.encode(sequences)
    noise = jax.random.normal(rng, (6, B, T - 1, 4))
    draws = jax.vmap(lambda n: recurrent(target[:, 0], label, n))(noise)
    errors = jnp.sum((draws - target) ** 2, axis=(-2, -1))
    chosen_error = jnp.sum((chosen - target) ** 2, axis=(-2, -1))
    np.testing.assert_allclose(chosen_error, errors.min(0), rtol=1e-5)


def test_judge_is_in_no_loss_and_differs_from_the_loss_classifier():
    assert all("judge" not in stage.requires for stage in STAGES.values())
    judge = SequenceJudge(C, 5, 16, 8, rngs=nnx.Rngs(0))
    out = judge(_sequences())
    assert out["features"].shape == (B, 8) and out["class_logits"].shape == (B, C)
    assert out["style_logits"].shape == (B, 5)
    # It reads motion in inter-ocular units: a face scaled about its centre with
    # its motion is judged the same.
    scaled = judge(_sequences() * 0.5)
    np.testing.assert_allclose(scaled["class_logits"], out["class_logits"], atol=1e-5)


def test_shared_noise_gives_every_input_the_same_draw():
    recurrent = ConditionalRecurrent(D, C, 4, 16, rngs=nnx.Rngs(1))
    z0 = jnp.zeros((3, D))
    draws = recurrent.sample(z0, jnp.zeros(3, jnp.int32), jax.random.PRNGKey(0), 2, T, shared=True)
    np.testing.assert_allclose(draws[:, 0], draws[:, 2])
    independent = recurrent.sample(z0, jnp.zeros(3, jnp.int32), jax.random.PRNGKey(0), 2, T)
    assert not np.allclose(independent[:, 0], independent[:, 2])


def test_noise_posterior_kl_is_zero_at_the_prior():
    posterior = NoisePosterior((T - 1, 4), 8, 8, rngs=nnx.Rngs(0))
    mean, log_var = posterior(_sequences())
    assert mean.shape == log_var.shape == (B, T - 1, 4)
    assert float(gaussian_kl(jnp.zeros((B, T - 1, 4)), jnp.zeros((B, T - 1, 4)))) == pytest.approx(0.0)
    assert float(gaussian_kl(mean + 1.0, log_var)) > 0.0


def test_variation_latent_changes_each_mode_and_is_inferred_in_training():
    config = tiny.get_config()
    config.multimode.variation_dim = 4
    config.multimode.train_timing = "posterior"
    config.multimode.temperature = 1.0
    info = DatasetInfo(("a", "b"), ("s0", "s1"), T)
    frozen = {k: STAGES[k].build(config, info, nnx.Rngs(0)) for k in ("vae", "classifier", "recurrent")}
    stage = STAGES["multimode"].build(config, info, nnx.Rngs(0))
    sequences, label = _sequences(), jnp.array([0, 1, 0])
    batch = dict(landmarks=sequences, label=label, style=jnp.zeros(B, jnp.int32))
    _, metrics = STAGES["multimode"].loss(stage, frozen, batch, jax.random.PRNGKey(0), config)
    assert float(metrics["variation_kl"]) > 0.0
    args = (frozen["vae"], frozen["recurrent"], stage.generator, sequences[:, 0], label)
    one, other = (generate(*args, jax.random.PRNGKey(s), T, True) for s in (1, 2))
    assert one.shape == (B, config.num_modes, T, 68, 2) and not np.allclose(one, other)
