"""The training-free renderer: piecewise-affine warping of a face along landmarks.

The 68 points plus fixed points on the image border are cut into triangles
once (Delaunay on the template of `cmm_jax.face`, so every face shares one
mesh). To draw a frame, each output pixel finds the triangle of the *target*
mesh that holds it, takes its barycentric coordinates there, and reads the
source image at the same barycentric coordinates of the *source* triangle
(backward mapping, bilinear sampling). Border points never move, so the
background stays still and every pixel lies in some triangle.

The photo's mouth is closed, so where the target's lips part the warp would
stretch the lips over the gap; by default each frame gets the mouth's inside
(cavity, teeth) drawn there by `cmm_jax.mouth`, with colours taken once from
the source photo (`mouth_interior=False`: the bare warp). Closed lips give
exactly the bare warp.

Written in JAX and vectorised over pixels and triangles (a dense test of every
pixel against every triangle: ~4k pixels x ~130 triangles at 64x64, cheap
next to a per-frame Python loop; above COORDINATE_GRID pixels a side the map
is computed on a lattice and interpolated), batched over any leading axes of
the target points (modes, frames) with `lax.map` over frames to bound memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import Delaunay

from cmm_jax import alignment, landmarks, mouth

# Fixed points per image edge, corners included.
BORDER_POINTS_PER_EDGE = 5
# Frames larger than this many pixels a side map a lattice of this size
# exactly and interpolate between (`source_coordinates`): 5x faster at 256 px.
COORDINATE_GRID = 128


def border_points(size: int) -> np.ndarray:
    """Fixed points on the border of a size x size image, float32 (4 * (n - 1), 2)."""
    ticks = np.linspace(0.0, size - 1.0, BORDER_POINTS_PER_EDGE)
    low, high = ticks[:-1], ticks[1:]
    top = np.stack([low, np.zeros_like(low)], -1)
    right = np.stack([np.full_like(low, size - 1.0), low], -1)
    bottom = np.stack([high, np.full_like(high, size - 1.0)], -1)
    left = np.stack([np.zeros_like(high), high], -1)
    return np.concatenate([top, right, bottom[::-1], left[::-1]]).astype(np.float32)


@functools.cache
def triangles() -> np.ndarray:
    """Vertex indices int32 (n, 3) into the 68 points followed by the border points.

    Delaunay triangulation of the template's points (which has the mouth
    closed, so the inner-lip triangles that stretch when the mouth opens are
    thin, not missing).
    """
    size = landmarks.CROP_SIZE
    points = np.concatenate([alignment.mean_neutral_shape(size), border_points(size)])
    result = np.asarray(Delaunay(points).simplices, np.int32)
    result.setflags(write=False)
    return result


def with_border(points: jax.Array, size: int) -> jax.Array:
    """(..., 68, 2) -> (..., 68 + border, 2): appends the fixed border points."""
    border = jnp.broadcast_to(jnp.asarray(border_points(size)), points.shape[:-2] + (border_points(size).shape[0], 2))
    return jnp.concatenate([points.astype(jnp.float32), border], axis=-2)


def _bilinear(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """image (H, W, C) sampled at float pixel positions x, y (...,): (..., C), edge-clamped."""
    height, width = image.shape[:2]
    x = jnp.clip(x, 0.0, width - 1.0)
    y = jnp.clip(y, 0.0, height - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, width - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, height - 2).astype(jnp.int32)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _coordinates_at(source_points: jax.Array, target_points: jax.Array, size: int, ticks: jax.Array) -> jax.Array:
    """The backward map at the positions ticks x ticks (rows y, columns x) of a
    size x size frame: where each of them reads the source. (G, G, 2) as (x, y)."""
    tri = jnp.asarray(triangles())
    source = with_border(source_points, size)[tri]  # (n, 3, 2)
    target = with_border(target_points, size)[tri]
    # Barycentric coordinates of every position in every target triangle.
    origin = target[:, 0]  # (n, 2)
    edges = jnp.stack([target[:, 1] - origin, target[:, 2] - origin], axis=-1)  # (n, 2, 2)
    det = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    det = jnp.where(jnp.abs(det) < 1e-6, 1e-6, det)  # a collapsed triangle holds no pixel
    inverse = jnp.stack(
        [jnp.stack([edges[:, 1, 1], -edges[:, 0, 1]], -1), jnp.stack([-edges[:, 1, 0], edges[:, 0, 0]], -1)],
        axis=-2,
    ) / det[:, None, None]
    ys, xs = jnp.meshgrid(ticks, ticks, indexing="ij")
    pixels = jnp.stack([xs, ys], -1).reshape(-1, 1, 2)  # (P, 1, 2)
    dx, dy = pixels[..., 0] - origin[:, 0], pixels[..., 1] - origin[:, 1]  # (P, n)
    l1 = inverse[:, 0, 0] * dx + inverse[:, 0, 1] * dy
    l2 = inverse[:, 1, 0] * dx + inverse[:, 1, 1] * dy
    # The triangle that holds the pixel has all weights >= 0; on shared edges
    # and for rounding, take the one whose smallest weight is largest.
    best = jnp.argmax(jnp.minimum(1.0 - l1 - l2, jnp.minimum(l1, l2)), axis=1)  # (P,)
    chosen = jnp.stack([jnp.take_along_axis(l, best[:, None], axis=1)[:, 0] for l in (l1, l2)], -1)
    weights = jnp.concatenate([1.0 - chosen.sum(-1, keepdims=True), chosen], -1)  # (P, 3)
    coords = jnp.einsum("pk,pkd->pd", weights, source[best])
    return coords.reshape(len(ticks), len(ticks), 2)


def source_coordinates(source_points: jax.Array, target_points: jax.Array, size: int,
                       grid: int = COORDINATE_GRID) -> jax.Array:
    """Where each pixel of the target frame reads the source image. (size, size, 2) as (x, y).

    source_points, target_points: (68, 2) in pixels of a size x size image.
    Up to `grid` pixels a side every pixel is mapped exactly. A larger frame
    maps a grid x grid lattice of its pixels exactly and interpolates the map
    bilinearly between them: exact inside a triangle (the map is affine
    there) and continuous across edges (it is continuous), so only pixels
    near a triangle much thinner than a lattice cell differ (measured at 256
    px on smiles: mean 0.02 grey levels, 99.9th percentile 3).
    """
    if size <= grid:
        return _coordinates_at(source_points, target_points, size, jnp.arange(size, dtype=jnp.float32))
    coarse = _coordinates_at(source_points, target_points, size, jnp.linspace(0.0, size - 1.0, grid))
    lattice = jnp.arange(size, dtype=jnp.float32) * ((grid - 1) / (size - 1))  # pixel -> lattice units
    ys, xs = jnp.meshgrid(lattice, lattice, indexing="ij")
    return _bilinear(coarse, xs, ys)


def _warp_frame(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
                palette: mouth.MouthPalette | None) -> jax.Array:
    """One frame, with the mouth's inside drawn from `palette` (None: the bare warp)."""
    coords = source_coordinates(source_points, target_points, image.shape[0])
    frame = _bilinear(image, coords[..., 0], coords[..., 1])
    if palette is None:
        return frame
    return mouth.draw_mouth_interior(frame, palette, source_points, target_points)


def warp_image(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
               mouth_interior: bool = True) -> jax.Array:
    """One frame: the face of `image` moved from source_points to target_points.

    image: (S, S, C) float; points (68, 2) in its pixels. -> (S, S, C) float.
    mouth_interior: draw the inside of the mouth where the lips part
    (`cmm_jax.mouth`; needs C = 3, RGB in [0, 255]); False gives the bare
    geometric warp.
    """
    palette = mouth.mouth_palette(image, source_points) if mouth_interior else None
    return _warp_frame(image, source_points, target_points, palette)


@functools.partial(jax.jit, static_argnames="mouth_interior")
def warp_sequence(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
                  mouth_interior: bool = True) -> jax.Array:
    """Every frame of one or many landmark sequences, from one source image.

    image: (S, S, 3) uint8 or float; source_points (68, 2); target_points
    (..., 68, 2) (e.g. (K, T, 68, 2)), all in pixels of the S x S image.
    mouth_interior: as in `warp_image` (its colours are taken from the image
    once for all frames). Returns (..., S, S, 3) uint8.
    """
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"square images only, got {image.shape}")
    lead = target_points.shape[:-2]
    flat = target_points.reshape(-1, landmarks.NUM_POINTS, 2)
    source = image.astype(jnp.float32)
    palette = mouth.mouth_palette(source, source_points) if mouth_interior else None
    frames = jax.lax.map(lambda t: _warp_frame(source, source_points, t, palette), flat)
    frames = jnp.clip(jnp.round(frames), 0, 255).astype(jnp.uint8)
    return frames.reshape(*lead, *frames.shape[1:])
