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
[-1, 1] as a convex combination of two images in [-1, 1]. Its adversary is
`discriminator.py`; the losses are the translator stage's (`cmm_jax.stages`).

Precision: `dtype` is what the U-Net's convolutions and normalisations
compute in (float32, or bfloat16 on accelerators that have bf16 matrix
units); its parameters are float32 either way, so a checkpoint serves both.
The warp, the flow in pixels, the mask and the blend stay in float32.

Images: float32 (B, H, W, 3) in [-1, 1], H = W a power of two >= 32.
Landmarks: float32 (B, 68, 2) in pixel coordinates of the image (x right,
y down), integer coordinates at pixel centres.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax import warp as piecewise_affine
from cmm_jax.models.layers import LEAK, NUM_PARTS, group_norm, landmark_heatmaps

# The flow head's outputs are in units of 1/32 of the image side, so an O(1)
# output is a smile-sized motion (2 px at 64x64) at any resolution.
FLOW_UNITS = 1.0 / 32.0
# Initial mask logit: sigmoid(3) = 0.95, mostly the (warped) neutral face.
MASK_INIT = 3.0
# Reach of each landmark's motion in the `sparse_motion` input (pixels at 64x64).
MOTION_SIGMA = 4.0


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
    coords = piecewise_affine.batch_source_coordinates(source_points, target_points, size)
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


class ConvBlock(nnx.Module):
    """3x3 convolution (optionally stride 2), GroupNorm, LeakyReLU."""

    def __init__(self, in_features: int, out_features: int, stride: int = 1, dtype=None, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            in_features, out_features, (3, 3), strides=stride, use_bias=False, dtype=dtype, rngs=rngs
        )
        self.norm = group_norm(out_features, rngs, dtype)

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

    def __init__(self, features: int = 32, num_levels: int = 4, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.num_levels = num_levels
        inputs = 3 + 2 * NUM_PARTS + 2 + 3
        # Level i runs at 1/2**(i+1) of the image side.
        widths = [min(features * 2**i, 8 * features) for i in range(num_levels)]
        self.down = nnx.List(
            [
                ConvBlock(a, b, stride=2, dtype=dtype, rngs=rngs)
                for a, b in zip([inputs] + widths[:-1], widths)
            ]
        )
        self.bottleneck = ConvBlock(widths[-1], widths[-1], dtype=dtype, rngs=rngs)
        # up[i] brings level i+1 to level i and merges skip i.
        self.up = nnx.List(
            [ConvBlock(widths[i + 1] + widths[i], widths[i], dtype=dtype, rngs=rngs) for i in range(num_levels - 1)]
        )
        # Full resolution only at the output, where a 3x3 convolution of the
        # upsampled features gives flow, mask and RGB. (Feeding it the raw
        # input as well nearly doubled the step time on CPU.) Zero kernels:
        # the first output is the piecewise-affine warp, blended in at the
        # mask bias's sigmoid (see module).
        self.head = nnx.Conv(
            widths[0], 2 + 1 + 3, (3, 3),
            kernel_init=nnx.initializers.zeros, bias_init=_head_bias, dtype=dtype, rngs=rngs,
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
            self.head(_upsample(features)).astype(jnp.float32), [2, 3], axis=-1
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
