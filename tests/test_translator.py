"""The translator: heatmaps, warping, network shapes, the one-gradient GAN
trick, and that a few optimiser steps learn to move a face along its points."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import ndimage

from cmm_jax import alignment
from cmm_jax import warp as piecewise_affine
from cmm_jax.models import translator
from cmm_jax.models.layers import NUM_PARTS, landmark_heatmaps
from cmm_jax.models.translator import warp
from cmm_jax.stages import TranslatorStage, sample_pairs, translator_losses
from experiments import smile


def tiny_config() -> ml_collections.ConfigDict:
    config = smile.get_config()
    config.translator.features = 8
    config.translator.num_levels = 3
    config.translator.disc_features = 8
    return config


@pytest.fixture(scope="module")
def stage() -> TranslatorStage:
    """One tiny stage for every test (building a network compiles its
    initialisers, which dominates these tests' time)."""
    return TranslatorStage(tiny_config(), rngs=nnx.Rngs(0))


def random_points(rng: np.random.Generator, batch: int, size: int) -> jnp.ndarray:
    return jnp.asarray(rng.uniform(0.2 * size, 0.8 * size, (batch, 68, 2)), jnp.float32)


def perturbed(module: nnx.Module, seed: int, scale: float) -> nnx.Module:
    """The module with noise added to every parameter (the zero-initialised
    heads would otherwise hide mistakes)."""
    graphdef, state = nnx.split(module)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda x: x + scale * rng.normal(size=x.shape).astype(np.float32), state)
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("size", [64, 128])
def test_heatmap_peaks_sit_at_the_points(size):
    rng = np.random.default_rng(size)
    points = jnp.asarray(rng.integers(0, size, (3, 68, 2)), jnp.float32)
    render = jax.jit(landmark_heatmaps, static_argnums=1)
    heatmaps = render(points, size)
    assert heatmaps.shape == (3, size, size, NUM_PARTS)
    assert float(heatmaps.min()) >= 0.0 and float(heatmaps.max()) <= 1.0

    single = landmark_heatmaps(points, size, groups=[(0,), (30,), (48,), (67,)])
    flat_peak = jnp.argmax(single.reshape(3, size * size, 4), axis=1)  # (3, 4)
    rows, cols = np.divmod(np.asarray(flat_peak), size)
    expected = np.asarray(points)[:, [0, 30, 48, 67]]
    np.testing.assert_array_equal(cols, expected[..., 0])  # x is the column
    np.testing.assert_array_equal(rows, expected[..., 1])
    np.testing.assert_allclose(single.max(axis=(1, 2)), 1.0, rtol=1e-6)


def test_warp_moves_pixels_by_the_flow():
    image = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
    np.testing.assert_allclose(warp(image, jnp.zeros((2, 32, 32, 2))), image, atol=1e-6)
    shifted = warp(image, jnp.broadcast_to(jnp.array([2.0, 1.0]), (2, 32, 32, 2)))
    # out[y, x] = image[y + 1, x + 2] away from the clamped border.
    np.testing.assert_allclose(shifted[:, :-1, :-2], image[:, 1:, 2:], atol=1e-6)
    half = warp(image, jnp.broadcast_to(jnp.array([0.5, 0.0]), (2, 32, 32, 2)))
    np.testing.assert_allclose(half[:, :, :-1], 0.5 * (image[:, :, :-1] + image[:, :, 1:]), atol=1e-6)


@pytest.mark.parametrize("size", [64, 128])
def test_generator_and_discriminator_shapes(stage, size):
    rng = np.random.default_rng(0)
    source = jnp.asarray(rng.uniform(-1, 1, (2, size, size, 3)), jnp.float32)
    source_points, target_points = random_points(rng, 2, size), random_points(rng, 2, size)

    generator = perturbed(stage.generator, seed=1, scale=1.0)
    parts = nnx.jit(lambda g, *args: g.render(*args))(generator, source, source_points, target_points)
    assert parts["image"].shape == (2, size, size, 3)
    assert parts["flow"].shape == (2, size, size, 2)
    assert parts["mask"].shape == (2, size, size, 1)
    # Large random weights: the output is still a convex mix of images in [-1, 1].
    assert float(jnp.abs(parts["image"]).max()) <= 1.0
    assert float(jnp.std(parts["image"] - source)) > 0.01

    logits, features = nnx.jit(lambda d, *args: d(*args))(
        stage.discriminator, parts["image"], source, target_points
    )
    assert logits.shape == (2, size // 8, size // 8, 1)
    assert [f.shape for f in features] == [
        (2, size // 2, size // 2, 8),
        (2, size // 4, size // 4, 16),
        (2, size // 8, size // 8, 32),
    ]


def test_fresh_generator_is_the_piecewise_affine_warp(stage):
    rng = np.random.default_rng(0)
    source = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    points = jnp.asarray(alignment.mean_neutral_shape(32))[None].repeat(2, 0)
    target = points.at[:, 48:68].add(jnp.asarray(rng.uniform(-1.5, 1.5, (2, 20, 2)), jnp.float32))
    parts = nnx.jit(lambda g, *args: g.render(*args))(stage.generator, source, points, target)
    for i in range(2):  # zero correction: exactly the warp renderer's geometric warp
        bare = piecewise_affine.warp_image(source[i], points[i], target[i], mouth_interior=False, smile_folds=False)
        np.testing.assert_allclose(parts["warped"][i], bare, atol=1e-5)
    assert float(parts["mask"].min()) > 0.9


def test_sample_pairs_pairs_frame_zero_with_later_frames_of_the_same_clip():
    batch, num_frames, frames_per_clip = 3, 6, 4
    # Every frame and its points carry the value 10 * clip + frame.
    code = 10.0 * jnp.arange(batch)[:, None] + jnp.arange(num_frames)[None, :]
    frames = jnp.broadcast_to(code[:, :, None, None, None], (batch, num_frames, 4, 4, 3))
    points = jnp.broadcast_to(code[:, :, None, None], (batch, num_frames, 68, 2))
    source, source_points, target_points, target = sample_pairs(
        frames, points, jax.random.PRNGKey(0), frames_per_clip
    )
    assert source.shape == target.shape == (batch * frames_per_clip, 4, 4, 3)
    assert source_points.shape == target_points.shape == (batch * frames_per_clip, 68, 2)
    source_code = np.asarray(source[:, 0, 0, 0])
    target_code = np.asarray(target[:, 0, 0, 0])
    np.testing.assert_array_equal(source_code, np.repeat(10.0 * np.arange(batch), frames_per_clip))
    np.testing.assert_array_equal(np.asarray(source_points[:, 0, 0]), source_code)
    np.testing.assert_array_equal(np.asarray(target_points[:, 0, 0]), target_code)
    frame_index = target_code - source_code
    assert frame_index.min() >= 1 and frame_index.max() < num_frames
    for clip in frame_index.reshape(batch, frames_per_clip):
        assert len(set(clip)) == frames_per_clip  # without replacement


def test_one_gradient_gives_the_generator_and_discriminator_gradients(stage):
    weights = tiny_config().translator
    weights.part_l1_weight = 0.0  # plain L1 here; the part weighting has its own test
    rng = np.random.default_rng(0)
    source = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    source_points, target_points = random_points(rng, 2, 32), random_points(rng, 2, 32)
    stage = perturbed(stage, seed=1, scale=0.05)
    graphdef, state = nnx.split(stage)
    g_graphdef, g_state = nnx.split(stage.generator)
    d_graphdef, d_state = nnx.split(stage.discriminator)

    def total(state):
        stage = nnx.merge(graphdef, state)
        return translator_losses(stage, source, source_points, target_points, target, weights)

    (loss, metrics), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(state)
    total_grads = nnx.merge(graphdef, grads)

    # The two losses written out separately, each a function of its own
    # network's parameters only.
    def discriminator_loss(d_state, fake):
        discriminator = nnx.merge(d_graphdef, d_state)
        real_logits, _ = discriminator(target, source, target_points)
        fake_logits, _ = discriminator(fake, source, target_points)
        return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))

    def generator_loss(g_state):
        image = nnx.merge(g_graphdef, g_state)(source, source_points, target_points)
        discriminator = nnx.merge(d_graphdef, d_state)
        fake_logits, fake_features = discriminator(image, source, target_points)
        _, real_features = discriminator(target, source, target_points)
        matching = jnp.mean(
            jnp.stack([jnp.mean(jnp.abs(f - r)) for f, r in zip(fake_features, real_features)])
        )
        return (
            weights.l1_weight * jnp.mean(jnp.abs(image - target))
            + weights.adversarial_weight * jnp.mean(jax.nn.softplus(-fake_logits))
            + weights.feature_matching_weight * matching
        )

    @jax.jit
    def separately(g_state, d_state):
        fake = nnx.merge(g_graphdef, g_state)(source, source_points, target_points)
        d_loss, d_grads = jax.value_and_grad(discriminator_loss)(d_state, fake)
        g_loss, g_grads = jax.value_and_grad(generator_loss)(g_state)
        return d_loss, d_grads, g_loss, g_grads

    d_loss, d_grads, g_loss, g_grads = separately(g_state, d_state)
    np.testing.assert_allclose(metrics["discriminator_loss"], d_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["generator_loss"], g_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, g_loss + d_loss, rtol=1e-5)

    for name, expected in [("discriminator", d_grads), ("generator", g_grads)]:
        actual = nnx.state(getattr(total_grads, name))
        largest = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(expected))
        assert largest > 0
        jax.tree.map(
            lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6 * largest),
            actual,
            expected,
        )


def test_a_few_steps_learn_to_move_the_image_along_its_points(stage):
    """Each step shifts every source image by a fresh random offset, and its
    points with it: only the points say where to move (a model that ignores
    the target points ends above the copy baseline). Scored on held-out
    shifts against copying the source."""
    size, batch, pad, max_shift = 32, 8, 4, 2
    rng = np.random.default_rng(0)
    # Smooth random images in [-1, 1], with a margin to shift into view.
    padded = ndimage.gaussian_filter(rng.normal(size=(batch, size + 2 * pad, size + 2 * pad, 3)), (0, 3, 3, 0))
    padded = jnp.asarray(np.tanh(padded / padded.std()), jnp.float32)
    source = padded[:, pad:-pad, pad:-pad]
    source_points = random_points(rng, batch, size)

    def shifted(key):
        """-> target (B, size, size, 3) with content moved by (dx, dy), target points."""
        shifts = jax.random.randint(key, (batch, 2), -max_shift, max_shift + 1)  # (dx, dy)

        def crop(image, shift):
            start = (pad - shift[1], pad - shift[0], 0)
            return jax.lax.dynamic_slice(image, start, (size, size, 3))

        return jax.vmap(crop)(padded, shifts), source_points + shifts[:, None, :].astype(jnp.float32)

    config = tiny_config()
    graphdef, params = nnx.split(stage)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(4e-3))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        target, target_points = shifted(key)

        def loss_fn(params):
            return translator_losses(
                nnx.merge(graphdef, params), source, source_points, target_points, target,
                config.translator,
            )

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    keys = jax.random.split(jax.random.PRNGKey(1), 301)
    for key in keys[:-1]:
        params, opt_state, metrics = step(params, opt_state, key)
    assert np.isfinite(float(metrics["discriminator_loss"]))

    target, target_points = shifted(keys[-1])
    generated = nnx.merge(graphdef, params).generator(source, source_points, target_points)
    held_out_l1 = float(jnp.mean(jnp.abs(generated - target)))
    copy_l1 = float(jnp.mean(jnp.abs(source - target)))
    assert held_out_l1 < 0.8 * copy_l1


def test_sparse_motion_is_the_landmarks_backward_motion():
    points = jnp.asarray(alignment.mean_neutral_shape(64))[None]
    moved = points.at[:, 54].add(jnp.array([3.0, -1.0]))
    motion = translator.sparse_motion(points, moved, 64)
    x, y = np.round(np.asarray(moved[0, 54])).astype(int)
    # At the moved mouth corner the motion points back towards where it came from
    # (diluted by the unmoved neighbours); far from the face it is zero.
    assert float(motion[0, y, x, 0]) < -0.5 and float(motion[0, y, x, 1]) > 0.1
    np.testing.assert_allclose(motion[0, 2, 2], 0.0, atol=1e-6)


def test_l1_weighs_the_moving_parts_more(stage):
    """The same error costs more on the lips than on the background."""
    config = tiny_config().translator
    points = jnp.asarray(alignment.mean_neutral_shape(64))[None]
    source = jnp.zeros((1, 64, 64, 3))
    fake = stage.generator(source, points, points)  # a fresh generator copies the source

    def l1_with_error_at(x, y):
        target = source.at[:, y - 1 : y + 2, x - 1 : x + 2].add(0.5)
        return float(translator_losses(stage, source, points, points, target, config)[1]["l1"])

    mouth = np.round(np.asarray(points[0, 51])).astype(int)
    assert np.abs(np.asarray(fake)).max() < 0.1
    assert l1_with_error_at(*mouth) > 2.0 * l1_with_error_at(4, 4)


def test_bfloat16_computes_in_bf16_from_the_same_float32_parameters(stage):
    """translator.dtype=bfloat16: the same float32 parameters (a checkpoint
    serves both), convolutions in bf16, frames, logits, features and gradients
    in float32 and close to the float32 model's."""
    config = tiny_config()
    config.translator.dtype = "bfloat16"
    half = nnx.eval_shape(lambda: TranslatorStage(config, rngs=nnx.Rngs(0)))  # no need to initialise
    full_graphdef, full_params = nnx.split(perturbed(stage, 3, 0.05))  # heads away from zero
    half = nnx.merge(nnx.graphdef(half), full_params)
    for a, b in zip(jax.tree.leaves(nnx.state(stage)), jax.tree.leaves(nnx.state(half))):
        assert a.dtype == b.dtype == jnp.float32 and a.shape == b.shape
    rng = np.random.default_rng(0)
    size, batch = 32, 2
    source = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
    source_points, target_points = random_points(rng, batch, size), random_points(rng, batch, size)
    target = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
    assert "bf16" in str(jax.make_jaxpr(lambda s: half.generator(s, source_points, target_points))(source))

    def run(graphdef):
        def loss(params):
            model = nnx.merge(graphdef, params)
            value, _ = translator_losses(model, source, source_points, target_points, target, config.translator)
            return value, model.generator(source, source_points, target_points)

        (value, frame), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(full_params)
        return frame, value, grads

    full_frame, full_loss, full_grads = run(full_graphdef)
    half_frame, half_loss, half_grads = run(nnx.graphdef(half))
    assert half_frame.dtype == jnp.float32 and half_loss.dtype == jnp.float32
    difference = float(jnp.abs(half_frame - full_frame).max())
    assert 0 < difference < 0.1  # bf16 keeps 8 bits of mantissa: close, not equal
    np.testing.assert_allclose(half_loss, full_loss, rtol=0.05)
    for a, b in zip(jax.tree.leaves(full_grads), jax.tree.leaves(half_grads)):
        assert b.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(b)))
    cosine = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(full_grads), jax.tree.leaves(half_grads)))
    cosine /= np.sqrt(sum(float(jnp.vdot(a, a)) for a in jax.tree.leaves(full_grads))
                      * sum(float(jnp.vdot(b, b)) for b in jax.tree.leaves(half_grads)))
    assert cosine > 0.95
