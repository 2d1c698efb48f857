"""Stage 4: the translator, (neutral face, landmarks of frame 0 and frame t) -> frame t.

A U-Net generator reads the neutral face, Gaussian heatmaps of the facial
parts at frame 0 and at frame t, the landmarks' local motion, and the neutral
face warped piecewise-affinely along the landmarks (`cmm_jax.warp`). It does
not paint frame t from scratch: it predicts a correction to the warp's
backward flow, an RGB image, and a mask that blends the two,

    frame = mask * warp(face, warp_flow + flow) + (1 - mask) * tanh(rgb),

a learned refinement of the geometric warp, as in warp-guided GANs for
single-photo facial animation (Geng et al., SIGGRAPH Asia 2018).

A smile mostly *moves* skin that is already in the photo (lip corners,
cheeks, eyelids); warping moves those pixels and keeps them sharp, whereas a
network that repaints them under an L1 loss averages them into blur. The
synthesised branch is left for what the photo does not contain (teeth, the
mouth's inside, closed eyelids). The heads start at zero flow correction and
a mask near 1, so training starts from the piecewise-affine warp. The output stays in
[-1, 1] as a convex combination of two images in [-1, 1].

A conditional PatchGAN discriminator (pix2pix) judges (frame, target
heatmaps, neutral face) patch by patch; its hidden features serve the
feature-matching loss. Generator and discriminator are trained by ONE
gradient of one scalar (`translator_losses`), so the stage fits the single
optimiser of `cmm_jax.train`.

Images: float32 (B, H, W, 3) in [-1, 1], H = W a power of two >= 32.
Landmarks: float32 (B, 68, 2) in pixel coordinates of the image (x right,
y down), integer coordinates at pixel centres.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from cmm_jax import landmarks
from cmm_jax import warp as piecewise_affine

# One heatmap channel per facial part: 68 channels would mostly be empty and
# tell the network nothing the parts do not.
PARTS = (
    landmarks.JAW,
    landmarks.RIGHT_BROW,
    landmarks.LEFT_BROW,
    landmarks.NOSE_BRIDGE,
    landmarks.NOSE_BOTTOM,
    landmarks.RIGHT_EYE,
    landmarks.LEFT_EYE,
    landmarks.OUTER_LIPS,
    landmarks.INNER_LIPS,
)
NUM_PARTS = len(PARTS)
# The parts a smile moves, and the reach (pixels at 64x64, scaled with the
# image) of their extra weight in the L1 loss.
MOVING_PARTS = (landmarks.RIGHT_EYE, landmarks.LEFT_EYE, landmarks.OUTER_LIPS, landmarks.INNER_LIPS)
PART_L1_SIGMA = 3.0

LEAK = 0.2
# The flow head's outputs are in units of 1/32 of the image side, so an O(1)
# output is a smile-sized motion (2 px at 64x64) at any resolution.
FLOW_UNITS = 1.0 / 32.0
# Initial mask logit: sigmoid(3) = 0.95, mostly the (warped) neutral face.
MASK_INIT = 3.0
# Reach of each landmark's motion in the `sparse_motion` input (pixels at 64x64).
MOTION_SIGMA = 4.0


def default_config() -> ml_collections.ConfigDict:
    """The `translator` section of an experiment config."""
    config = ml_collections.ConfigDict()
    # Sizes for a 2-core CPU: a step at batch 32 of 64x64 pairs takes 0.29 s
    # (features=32, disc_features=32: 0.42 s), and on warped-face pairs 24
    # features reached a lower held-out L1 than 16 (0.023 against 0.026).
    config.features = 24  # generator channels at 1/2 resolution, x2 per level
    config.num_levels = 4  # generator downsamplings: 64x64 -> 4x4
    config.disc_features = 16
    # pix2pix's ratio of L1 to adversarial weight. At 10 the discriminator,
    # which memorises a small training set quickly, pulled the generator away
    # from the targets (L1 rose on a fixed problem); at 100 the adversarial
    # term refines what L1 places.
    config.l1_weight = 100.0
    config.part_l1_weight = 4.0  # extra L1 weight on the eyes and lips (1 + this at a point)
    config.adversarial_weight = 1.0
    config.feature_matching_weight = 1.0
    config.frames_per_clip = 4  # target frames drawn from each clip per step
    config.steps = 2000
    config.batch_size = 8  # clips; each gives frames_per_clip (neutral, frame t) pairs
    config.learning_rate = 5e-4
    return config


def landmark_heatmaps(
    points: jax.Array,
    size: int,
    sigma: float = 1.5,
    groups: Sequence[Sequence[int]] = PARTS,
) -> jax.Array:
    """Gaussian heatmaps, one channel per group of points (max over its points).

    points: (..., 68, 2) pixel coordinates -> (..., size, size, len(groups)),
    each value in [0, 1], 1 at a point.
    """
    grid = jnp.arange(size, dtype=points.dtype)
    # A 2D Gaussian is separable: one exp per point and row / column.
    along_x = jnp.exp(-((grid - points[..., :, 0:1]) ** 2) / (2 * sigma**2))  # (..., 68, W)
    along_y = jnp.exp(-((grid - points[..., :, 1:2]) ** 2) / (2 * sigma**2))  # (..., 68, H)
    channels = []
    for group in groups:
        index = jnp.asarray(group)
        blobs = along_y[..., index, :, None] * along_x[..., index, None, :]  # (..., P, H, W)
        channels.append(blobs.max(axis=-3))
    return jnp.stack(channels, axis=-1)


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    """Backward warp: out[y, x] = image[y + flow_y, x + flow_x], bilinear,
    clamped at the border. image: (B, H, W, C); flow: (B, H, W, 2) in pixels
    as (dx, dy) -> (B, H, W, C)."""
    batch, height, width, channels = image.shape
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    x = jnp.clip(cols + flow[..., 0], 0, width - 1)
    y = jnp.clip(rows + flow[..., 1], 0, height - 1)
    x0 = jnp.clip(jnp.floor(x), 0, width - 2)
    y0 = jnp.clip(jnp.floor(y), 0, height - 2)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    flat = image.reshape(batch, height * width, channels)

    def pixels(yy, xx):
        index = (yy * width + xx).astype(jnp.int32).reshape(batch, -1, 1)
        return jnp.take_along_axis(flat, index, axis=1).reshape(image.shape)

    top = pixels(y0, x0) * (1 - wx) + pixels(y0, x0 + 1) * wx
    bottom = pixels(y0 + 1, x0) * (1 - wx) + pixels(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def piecewise_affine_flow(source_points, target_points, size: int) -> jax.Array:
    """The backward flow of the training-free warp renderer (`cmm_jax.warp`):
    (B, 68, 2) x2 -> (B, H, W, 2) in pixels as (dx, dy). The translator refines it."""
    grid = jnp.stack(jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="xy"), -1).astype(jnp.float32)
    coords = jax.vmap(lambda s, t: piecewise_affine.source_coordinates(s, t, size))(source_points, target_points)
    return coords - grid


def sparse_motion(source_points, target_points, size: int, sigma: float = MOTION_SIGMA) -> jax.Array:
    """The landmarks' backward motion spread to nearby pixels: (B, 68, 2) x2 -> (B, H, W, 2).

    At each pixel p of the target frame: sum_i w_i(p) (s_i - t_i) / (sum_i
    w_i(p) + eps), with w_i(p) = exp(-|p - t_i|^2 / 2 sigma^2) (sigma in
    pixels at 64x64, scaled with the image). A convolutional network cannot
    easily read a 2-pixel displacement off two heatmaps; given the motion
    near each point (as FOMM/Monkey-Net give their keypoints' local motion),
    it learns where and how far to spread it.
    """
    sigma = sigma * size / 64.0
    grid = jnp.arange(size, dtype=jnp.float32)
    along_x = jnp.exp(-((grid - target_points[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, 68, W)
    along_y = jnp.exp(-((grid - target_points[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, 68, H)
    weights = jnp.einsum("bih,biw->bhwi", along_y, along_x)  # (B, H, W, 68)
    motion = jnp.einsum("bhwi,bid->bhwd", weights, source_points - target_points)
    return motion / (weights.sum(-1, keepdims=True) + 1e-3)


def _group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    # Not BatchNorm: its running statistics would not fit the pure train step.
    return nnx.GroupNorm(channels, num_groups=math.gcd(8, channels), rngs=rngs)


class ConvBlock(nnx.Module):
    """3x3 convolution (optionally stride 2), GroupNorm, LeakyReLU."""

    def __init__(self, in_features: int, out_features: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            in_features, out_features, (3, 3), strides=stride, use_bias=False, rngs=rngs
        )
        self.norm = _group_norm(out_features, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.leaky_relu(self.norm(self.conv(x)), LEAK)


def _head_bias(key, shape, dtype=jnp.float32) -> jax.Array:
    """Bias of the (flow x, flow y, mask, r, g, b) head: only the mask's is set."""
    return jnp.zeros(shape, dtype).at[2].set(MASK_INIT)


def _upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 (then a convolution): no checkerboard artefacts."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Translator(nnx.Module):
    """U-Net: (neutral face, points of frame 0, points of frame t) -> frame t."""

    def __init__(self, features: int = 32, num_levels: int = 4, *, rngs: nnx.Rngs):
        self.num_levels = num_levels
        inputs = 3 + 2 * NUM_PARTS + 2 + 3
        # Level i runs at 1/2**(i+1) of the image side.
        widths = [min(features * 2**i, 8 * features) for i in range(num_levels)]
        self.down = nnx.List(
            [
                ConvBlock(a, b, stride=2, rngs=rngs)
                for a, b in zip([inputs] + widths[:-1], widths)
            ]
        )
        self.bottleneck = ConvBlock(widths[-1], widths[-1], rngs=rngs)
        # up[i] brings level i+1 to level i and merges skip i.
        self.up = nnx.List(
            [ConvBlock(widths[i + 1] + widths[i], widths[i], rngs=rngs) for i in range(num_levels - 1)]
        )
        # Full resolution only at the output, where a 3x3 convolution of the
        # upsampled features gives flow, mask and RGB. (Feeding it the raw
        # input as well nearly doubled the step time on CPU.) Zero kernels:
        # the first output is the neutral face itself (see module).
        self.head = nnx.Conv(
            widths[0], 2 + 1 + 3, (3, 3),
            kernel_init=nnx.initializers.zeros, bias_init=_head_bias, rngs=rngs,
        )

    def render(self, source_image, source_points, target_points) -> dict[str, jax.Array]:
        """-> dict of image (B, H, W, 3), and its parts: warped (B, H, W, 3),
        flow (B, H, W, 2) in pixels, mask (B, H, W, 1), synthesised (B, H, W, 3)."""
        size = source_image.shape[1]
        if size % 2**self.num_levels:
            raise ValueError(f"image size {size} is not a multiple of 2**{self.num_levels}")
        base_flow = piecewise_affine_flow(source_points, target_points, size)
        base = warp(source_image, base_flow)
        x = jnp.concatenate(
            [
                source_image,
                landmark_heatmaps(source_points, size),
                landmark_heatmaps(target_points, size),
                sparse_motion(source_points, target_points, size) / (size * FLOW_UNITS),
                base,
            ],
            axis=-1,
        )
        skips = []
        for block in self.down:
            skips.append(block(skips[-1] if skips else x))
        features = self.bottleneck(skips.pop())
        for block, skip in zip(reversed(self.up), reversed(skips)):
            features = block(jnp.concatenate([_upsample(features), skip], axis=-1))
        flow, mask_logit, rgb = jnp.split(
            self.head(_upsample(features)), [2, 3], axis=-1
        )
        flow = base_flow + flow * (size * FLOW_UNITS)
        mask = jax.nn.sigmoid(mask_logit)
        warped = warp(source_image, flow)
        synthesised = jnp.tanh(rgb)
        return {
            "image": mask * warped + (1 - mask) * synthesised,
            "warped": warped,
            "flow": flow,
            "mask": mask,
            "synthesised": synthesised,
        }

    def __call__(self, source_image, source_points, target_points) -> jax.Array:
        """source_image: (B, H, W, 3) in [-1, 1]; source_points, target_points:
        (B, 68, 2) pixels -> frame (B, H, W, 3) in [-1, 1]."""
        return self.render(source_image, source_points, target_points)["image"]


class PatchDiscriminator(nnx.Module):
    """Conditional PatchGAN: one real/fake logit per overlapping patch.

    Input: concat(image, heatmaps of the target points, neutral face), so it
    judges whether the frame is real AND matches the points and the identity.
    4x4 convolutions, stride 2 `num_layers` times then stride 1; at 64x64
    with 3 layers each logit sees a 46x46 patch.
    """

    def __init__(self, features: int = 32, num_layers: int = 3, *, rngs: nnx.Rngs):
        widths = [3 + NUM_PARTS + 3] + [min(features * 2**i, 8 * features) for i in range(num_layers)]
        self.convs = nnx.List(
            [nnx.Conv(a, b, (4, 4), strides=2, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        # No normalisation on the first layer (pix2pix), GroupNorm after.
        self.norms = nnx.List([_group_norm(w, rngs) for w in widths[2:]])
        self.to_logit = nnx.Conv(widths[-1], 1, (4, 4), rngs=rngs)

    def __call__(self, image, source_image, target_points) -> tuple[jax.Array, list[jax.Array]]:
        """image, source_image: (B, H, W, 3); target_points: (B, 68, 2) ->
        logits (B, H / 2**num_layers, W / 2**num_layers, 1), hidden features."""
        heatmaps = landmark_heatmaps(target_points, image.shape[1])
        x = jnp.concatenate([image, heatmaps, source_image], axis=-1)
        features = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i > 0:
                x = self.norms[i - 1](x)
            x = jax.nn.leaky_relu(x, LEAK)
            features.append(x)
        return self.to_logit(x), features


class TranslatorStage(nnx.Module):
    """What the translator stage trains: the generator and its discriminator."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        self.generator = Translator(
            config.translator.features, config.translator.num_levels, rngs=rngs
        )
        self.discriminator = PatchDiscriminator(config.translator.disc_features, rngs=rngs)


def target_frames(rng, batch: int, num_frames: int, frames_per_clip: int) -> jax.Array:
    """Frames 1..T-1 drawn without replacement per clip: int (B, frames_per_clip)."""
    keys = jax.random.split(rng, batch)
    return jax.vmap(lambda key: 1 + jax.random.permutation(key, num_frames - 1)[:frames_per_clip])(keys)


def sample_pairs(frames, points, rng, frames_per_clip: int):
    """Training pairs from clips whose frame 0 is neutral.

    frames: (B, T, H, W, 3) in [-1, 1]; points: (B, T, 68, 2) pixels ->
    (source_image, source_points, target_points, target_image) with a leading
    axis B * frames_per_clip; targets are frames 1..T-1 drawn without
    replacement within a clip.
    """
    batch, num_frames = points.shape[:2]
    t = target_frames(rng, batch, num_frames, frames_per_clip)  # (B, F)
    clip = jnp.arange(batch)[:, None]

    def flat(x):
        return x.reshape(-1, *x.shape[2:])

    def repeat_first(x):
        return flat(jnp.repeat(x[:, :1], frames_per_clip, axis=1))

    return repeat_first(frames), repeat_first(points), flat(points[clip, t]), flat(frames[clip, t])


def psnr(image, target) -> jax.Array:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2),
    per image: (B, H, W, C) x2 -> (B,)."""
    mse = jnp.mean((image - target) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))


def translator_losses(
    stage: TranslatorStage, source_image, source_points, target_points, target_image, config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Generator and discriminator losses as ONE scalar, for one optimiser.

    loss = generator_loss(G params; D held fixed) + discriminator_loss(D params; fake held fixed)

    - the discriminator loss sees `stop_gradient(fake)`, so it sends no
      gradient into the generator;
    - the generator loss runs through a copy of the discriminator whose
      parameters are wrapped in `stop_gradient`, so it sends no gradient into
      the discriminator (and the generator does not learn to make D worse).
    Hence d(loss)/d(G params) = d(generator_loss)/d(G params) and
    d(loss)/d(D params) = d(discriminator_loss)/d(D params): one
    `value_and_grad` gives the simultaneous GAN updates.

    Adversarial loss: the non-saturating logistic loss of pix2pix. Its
    generator gradient does not vanish while D rejects the fakes confidently
    (early on), and its logits read as probabilities (D(real), D(fake)) for
    monitoring. Feature matching (pix2pixHD): L1 between D's hidden features
    of fake and real frames, which steadies the generator's signal.

    source_image, target_image: (B, H, W, 3) in [-1, 1]; source_points,
    target_points: (B, 68, 2) pixels. `config` holds l1_weight,
    adversarial_weight, feature_matching_weight.
    """
    fake = stage.generator(source_image, source_points, target_points)

    # Real and (held) fake frames through the discriminator as one batch.
    batch = target_image.shape[0]
    logits, features = stage.discriminator(
        jnp.concatenate([target_image, jax.lax.stop_gradient(fake)]),
        jnp.concatenate([source_image, source_image]),
        jnp.concatenate([target_points, target_points]),
    )
    real_logits, fake_logits_d = logits[:batch], logits[batch:]
    real_features = [f[:batch] for f in features]
    discriminator_loss = jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(
        jax.nn.softplus(fake_logits_d)
    )

    graphdef, disc_state = nnx.split(stage.discriminator)
    frozen_discriminator = nnx.merge(graphdef, jax.lax.stop_gradient(disc_state))
    fake_logits_g, fake_features = frozen_discriminator(fake, source_image, target_points)
    adversarial = jnp.mean(jax.nn.softplus(-fake_logits_g))
    feature_matching = jnp.mean(
        jnp.stack(
            [
                jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
                for f, r in zip(fake_features, real_features)
            ]
        )
    )
    # L1 with the face's moving parts (eyes, lips) weighted up: a smile moves
    # a few hundred pixels of a frame, and a plain mean lets a generator that
    # barely moves them look good.
    emphasis = jnp.max(
        landmark_heatmaps(target_points, target_image.shape[1], PART_L1_SIGMA * target_image.shape[1] / 64, MOVING_PARTS),
        axis=-1, keepdims=True,
    )
    weight = 1.0 + config.part_l1_weight * emphasis
    l1 = jnp.mean(jnp.abs(fake - target_image) * weight) / jnp.mean(weight)
    generator_loss = (
        config.l1_weight * l1
        + config.adversarial_weight * adversarial
        + config.feature_matching_weight * feature_matching
    )
    loss = generator_loss + discriminator_loss
    metrics = {
        "loss": loss,
        "l1": l1,
        "generator_adversarial": adversarial,
        "feature_matching": feature_matching,
        "generator_loss": generator_loss,
        "discriminator_loss": discriminator_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits_d)),
        "psnr": jnp.mean(psnr(fake, target_image)),
    }
    return loss, metrics
