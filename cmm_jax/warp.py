"""The training-free renderer: piecewise-affine warping of a face along landmarks.

The 68 points plus fixed points on the image border are cut into triangles
once (Delaunay on the template, `alignment.mean_neutral_shape`, so every
face shares one mesh). To draw a frame, each output pixel finds the triangle of the *target*
mesh that holds it, takes its barycentric coordinates there, and reads the
source image at the same barycentric coordinates of the *source* triangle
(backward mapping, bilinear sampling). Border points never move, so the
background stays still and every pixel lies in some triangle.

The photo's mouth is closed, so where the target's lips part the warp would
stretch the lips over the gap; by default each frame gets the mouth's inside
(cavity, teeth) drawn there by `cmm_jax.mouth`, with colours taken once from
the source photo (`mouth_interior=False`: the bare warp). Closed lips give
exactly the bare warp. Where the lip corners move up and out, the nasolabial
folds that a smile deepens are shaded by `cmm_jax.folds`, and where the lower
lids rise (AU6) the furrows below them and crow's feet (`smile_folds=False`:
none); a neutral frame stays exactly the warp.

Written in JAX, with no per-frame Python. Each pixel's target triangle comes
from a scan of the mesh row by row (each row crosses each triangle in an
interval of x; one scatter and a running maximum per row hand every pixel its
triangle), not from a test of every pixel against every triangle (~4k pixels x
150 triangles at 64x64). The two agree while no target triangle turns over;
a frame whose mesh folds takes the dense test (`lax.cond`), so the result
never depends on how far the points moved. On two busy CPU cores that is
about 0.2 ms a 64x64 frame against 4.7 ms for the dense test, 300-500x
faster than scikit-image's PiecewiseAffineTransform (benchmarks/HISTORY.md).
Above COORDINATE_GRID pixels a side the map is computed on a lattice and
interpolated. Batched over any leading axes of the target points (modes,
frames) with `lax.map` over frames to bound memory; `source_coordinates` also
works under `vmap` (then both tests run for every frame).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import Delaunay

from cmm_jax import alignment, folds, landmarks, mouth

# Fixed points per image edge, corners included.
BORDER_POINTS_PER_EDGE = 5
# Frames larger than this many pixels a side map a lattice of this size
# exactly and interpolate between (`source_coordinates`): 2x faster at 256 px.
COORDINATE_GRID = 128
# Twice the area (px^2) below which a target triangle counts as collapsed: it
# holds no pixel in the dense test, and the row scan is not used for its frame.
MIN_AREA = 1e-6


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
    thin, not missing), each triangle's corners in the order that gives it a
    positive signed area (cross product of its edges from corner 0) there.
    """
    size = landmarks.CROP_SIZE
    points = np.concatenate([alignment.mean_neutral_shape(size), border_points(size)])
    result = np.asarray(Delaunay(points).simplices, np.int32)
    a, b, c = (points[result[:, i]] for i in range(3))
    clockwise = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0] < 0
    result[clockwise] = result[clockwise][:, [0, 2, 1]]
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


def _target_frames(target: jax.Array):
    """Per target triangle (n, 3, 2): origin (n, 2), the inverse of its edge
    matrix (n, 2, 2) (pixel offset from the origin -> barycentric weights 1 and 2)
    and twice its signed area (n,) (> 0: as in the template)."""
    origin = target[:, 0]
    edges = jnp.stack([target[:, 1] - origin, target[:, 2] - origin], axis=-1)  # (n, 2, 2)
    area = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    det = jnp.where(jnp.abs(area) < MIN_AREA, MIN_AREA, area)  # a collapsed triangle holds no pixel
    inverse = jnp.stack(
        [jnp.stack([edges[:, 1, 1], -edges[:, 0, 1]], -1), jnp.stack([-edges[:, 1, 0], edges[:, 0, 0]], -1)],
        axis=-2,
    ) / det[:, None, None]
    return origin, inverse, area


def _dense_triangles(origin: jax.Array, inverse: jax.Array, xs: jax.Array, ys: jax.Array) -> jax.Array:
    """The triangle of each point (xs, ys) (P,), testing every point against
    every triangle: the one whose smallest barycentric weight is largest (all
    weights >= 0 inside; on shared edges and for rounding, the deepest). int32 (P,)."""
    dx, dy = xs[:, None] - origin[:, 0], ys[:, None] - origin[:, 1]  # (P, n)
    l1 = inverse[:, 0, 0] * dx + inverse[:, 0, 1] * dy
    l2 = inverse[:, 1, 0] * dx + inverse[:, 1, 1] * dy
    return jnp.argmax(jnp.minimum(1.0 - l1 - l2, jnp.minimum(l1, l2)), axis=1).astype(jnp.int32)


def _edge(upper: jax.Array, lower: jax.Array):
    """The edges from upper (n, 2) down to lower (n, 2): (x, y) of the upper end
    and the slope dx/dy, each (n,), so that x at row y is x + (y - y_upper) *
    slope, computed alike by both triangles of an edge (neighbours meet
    exactly). A horizontal edge gets dx as its slope; it is only read at its
    own row, where x is its upper end's."""
    rise = lower[:, 1] - upper[:, 1]
    return upper[:, 0], upper[:, 1], (lower[:, 0] - upper[:, 0]) / jnp.where(rise > 0, rise, 1.0)


def _fill_right(values: jax.Array) -> jax.Array:
    """Running maximum along the last axis (G,) of int (..., G) >= -1: log2(G) shifted maxima."""
    shift = 1
    while shift < values.shape[-1]:
        pad = [(0, 0)] * (values.ndim - 1) + [(shift, 0)]
        values = jnp.maximum(values, jnp.pad(values[..., :-shift], pad, constant_values=-1))
        shift *= 2
    return values


def _scanned_triangles(target: jax.Array, ticks: jax.Array) -> jax.Array:
    """The triangle of each lattice point, row by row: int32 (G, G) (rows y, columns x).

    target (n, 3, 2): the triangles in pixels; ticks (G,): the lattice's
    positions, i * step from 0 on both axes. Each row crosses each triangle in
    an interval of x (between its long edge, top to bottom corner, and one of
    its short ones), whose lattice points [first, last] it holds. Without
    folds the intervals tile the row in order, so along a row a later interval
    also ends later: a point's triangle is the interval that ends last among
    those that start at or before it. One scatter of (last, index) at `first`
    and a running maximum per row, instead of a test of every triangle;
    correct only for a mesh without folds (see `_lattice_coordinates`).
    """
    num, size = target.shape[0], ticks.shape[0]
    step = ticks[1] - ticks[0]

    def by_height(p, q):
        swap = (p[:, 1] > q[:, 1])[:, None]
        return jnp.where(swap, q, p), jnp.where(swap, p, q)

    top, middle = by_height(target[:, 0], target[:, 1])
    middle, bottom = by_height(middle, target[:, 2])
    top, middle = by_height(top, middle)
    y = ticks[:, None]  # (G, 1) against (n,)
    x0, y0, slope = _edge(top, bottom)
    long = x0 + (y - y0) * slope  # (G, n)
    upper, lower = _edge(top, middle), _edge(middle, bottom)
    x0, y0, slope = (jnp.where(y < middle[:, 1], u, l) for u, l in zip(upper, lower))
    short = x0 + (y - y0) * slope
    first = jnp.clip(jnp.ceil(jnp.minimum(long, short) / step), 0, size)
    last = jnp.clip(jnp.floor(jnp.maximum(long, short) / step), -1, size - 1)
    held = (top[:, 1] <= y) & (y <= bottom[:, 1]) & (first <= last)
    key = jnp.where(held, last.astype(jnp.int32) * num + jnp.arange(num, dtype=jnp.int32), -1)
    at = jnp.where(held, jnp.arange(size)[:, None] * size + first.astype(jnp.int32), size * size)  # else dropped
    starts = jnp.full(size * size, -1, jnp.int32).at[at.reshape(-1)].max(key.reshape(-1), mode="drop")
    return _fill_right(starts.reshape(size, size)) % num


def _barycentric_map(best, origin, inverse, source, xs, ys) -> jax.Array:
    """Each point (xs, ys) (P,) carried by its triangle best (P,) from the target
    mesh (`_target_frames`) to the source mesh (n, 3, 2): (P, 2) as (x, y)."""
    # One gather per number (a flat index into a 1-D table is XLA:CPU's fast gather).
    ox, oy, i00, i01, i10, i11 = (column[best] for column in (origin[:, 0], origin[:, 1], *inverse.reshape(-1, 4).T))
    dx, dy = xs - ox, ys - oy
    l1 = i00 * dx + i01 * dy
    l2 = i10 * dx + i11 * dy
    l0 = 1.0 - l1 - l2
    corners = [[source[:, k, d][best] for k in range(3)] for d in (0, 1)]
    return jnp.stack([l0 * c0 + l1 * c1 + l2 * c2 for c0, c1, c2 in corners], -1)


def _meshes(source_points: jax.Array, target_points: jax.Array, size: int):
    """The source and target triangles (n, 3, 2) of the shared mesh, in pixels
    of a size x size frame (points (68, 2) plus its border points)."""
    tri = jnp.asarray(triangles())
    return with_border(source_points, size)[tri], with_border(target_points, size)[tri]


def _lattice(size: int, grid: int):
    """A grid x grid lattice spanning a size x size frame: its positions ticks
    (G,) = i * (size - 1) / (grid - 1) on both axes, and its points row by row
    as xs, ys (G * G,)."""
    ticks = jnp.arange(grid, dtype=jnp.float32) * ((size - 1.0) / (grid - 1.0))
    ys, xs = (a.reshape(-1) for a in jnp.meshgrid(ticks, ticks, indexing="ij"))
    return ticks, xs, ys


def _upsampled(coarse: jax.Array, size: int) -> jax.Array:
    """A (G, G, 2) map on `_lattice(size, G)` -> (size, size, 2), bilinear."""
    grid = coarse.shape[0]
    lattice = jnp.arange(size, dtype=jnp.float32) * ((grid - 1) / (size - 1))  # pixel -> lattice units
    ys, xs = jnp.meshgrid(lattice, lattice, indexing="ij")
    return _bilinear(coarse, xs, ys)


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
    A frame whose mesh folds takes the dense test (`lax.cond`: under `vmap`
    both tests run; `batch_source_coordinates` maps a batch frame by frame).
    """
    coarse = _lattice_coordinates(source_points, target_points, size, min(size, grid))
    return coarse if size <= grid else _upsampled(coarse, size)


def _rows_near_folds(target: jax.Array, area: jax.Array, ticks: jax.Array) -> jax.Array:
    """bool (G,): the lattice rows where the row scan may be wrong.

    A fold (a triangle turned over or collapsed) covers points twice
    only within the triangles around its corners; rows that cross none of
    those triangles' heights (one lattice step of margin each side) meet
    intervals that tile them, so the scan is right there."""
    tri = jnp.asarray(triangles())
    folded = area < MIN_AREA  # (n,)
    corners = jnp.zeros(int(triangles().max()) + 1, bool).at[tri.reshape(-1)].max(jnp.repeat(folded, 3))  # per point
    near = corners[tri].any(-1)  # (n,) triangles sharing a corner with a folded one
    step = ticks[1] - ticks[0]
    low, high = target[..., 1].min(-1) - step, target[..., 1].max(-1) + step
    return (near & (ticks[:, None] >= low) & (ticks[:, None] <= high)).any(-1)


def _lattice_coordinates(source_points: jax.Array, target_points: jax.Array, size: int, grid: int) -> jax.Array:
    """The backward map at the points of `_lattice(size, grid)`: where each
    reads the source, (grid, grid, 2) as (x, y) (rows y, columns x).

    Each point's triangle comes from the row scan (`_scanned_triangles`) while
    the target mesh has no fold: every target triangle keeps the template's
    orientation (twice its signed area >= MIN_AREA), so the triangles cover
    the frame once (the border is fixed) and the scan finds the triangle the
    dense test (`_dense_triangles`) finds, ties on shared edges aside. Where
    it folds (an upper eyelid below the lower one; inner lips crossed), the
    rows near the fold (`_rows_near_folds`, at most a quarter of them) take
    the dense test and the others keep the scan; beyond a quarter, every
    point takes the dense test (`lax.switch`: one branch runs per frame).
    The lips of a thin-lipped face cross by a fraction of a pixel in many
    frames, a small fold: with the dense test of every point, Grace Hopper's
    and Biden's 256-px videos took 1.7 and 2.2 times as long to draw as the
    astronaut's (no fold), and now 1.2 and 1.3 times (BUILD.md, "What the
    scan and sampling cost")."""
    source, target = _meshes(source_points, target_points, size)
    origin, inverse, area = _target_frames(target)
    ticks, xs, ys = _lattice(size, grid)
    limit = max(1, grid // 4)
    rows = _rows_near_folds(target, area, ticks)

    def scanned():
        return _scanned_triangles(target, ticks).reshape(-1)

    def patched():
        index = jnp.nonzero(rows, size=limit, fill_value=jnp.argmax(rows))[0]  # (limit,), repeats of a near row
        dense = _dense_triangles(origin, inverse, jnp.tile(ticks, limit), jnp.repeat(ticks[index], grid))
        return _scanned_triangles(target, ticks).at[index].set(dense.reshape(limit, grid)).reshape(-1)

    def dense():
        return _dense_triangles(origin, inverse, xs, ys)

    count = rows.sum()
    branch = jnp.where(jnp.any(area < MIN_AREA), jnp.where(count <= limit, 1, 2), 0)
    best = jax.lax.switch(branch, [scanned, patched, dense])
    return _barycentric_map(best, origin, inverse, source, xs, ys).reshape(grid, grid, 2)


def batch_source_coordinates(source_points: jax.Array, target_points: jax.Array, size: int,
                             grid: int = COORDINATE_GRID) -> jax.Array:
    """`source_coordinates` of a batch: (B, 68, 2) x2 -> (B, size, size, 2).

    The frames go one after another (`lax.map`), so each takes its own
    branch: the row scan, or the dense test where its mesh folds. Under
    `vmap` the per-frame `lax.cond` would run both tests for every frame
    (smile_synth's closing eyelids fold a mesh in most training batches)."""
    return jax.lax.map(lambda pair: source_coordinates(*pair, size, grid), (source_points, target_points))


def _warp_frame(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
                palette: mouth.MouthPalette | None, smile_folds: bool) -> jax.Array:
    """One frame, with the mouth's inside drawn from `palette` (None: not drawn)
    and the smile's folds shaded if `smile_folds`."""
    coords = source_coordinates(source_points, target_points, image.shape[0])
    frame = _bilinear(image, coords[..., 0], coords[..., 1])
    if palette is not None:
        frame = mouth.draw_mouth_interior(frame, palette, source_points, target_points)
    if smile_folds:
        frame = folds.draw_smile_folds(frame, source_points, target_points)
    return frame


def warp_image(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
               mouth_interior: bool = True, smile_folds: bool = True) -> jax.Array:
    """One frame: the face of `image` moved from source_points to target_points.

    image: (S, S, C) float; points (68, 2) in its pixels. -> (S, S, C) float.
    mouth_interior: draw the inside of the mouth where the lips part
    (`cmm_jax.mouth`; needs C = 3, RGB in [0, 255]); smile_folds: shade the
    nasolabial folds where the lip corners move up and out, and the furrows
    and crow's feet of the eyes where the lower lids rise (`cmm_jax.folds`).
    Both False give the bare geometric warp.
    """
    palette = mouth.mouth_palette(image, source_points) if mouth_interior else None
    return _warp_frame(image, source_points, target_points, palette, smile_folds)


def warp_images(images: jax.Array, source_points: jax.Array, target_points: jax.Array,
                mouth_interior: bool = True, palettes: mouth.MouthPalette | None = None,
                smile_folds: bool = True) -> jax.Array:
    """`warp_image` of a batch, as the translator's training step draws its
    targets: images (B, S, S, 3) float RGB in [0, 255], points (B, 68, 2) ->
    (B, S, S, 3) float. Each frame's triangles come from its own test
    (`batch_source_coordinates`), and the mouth's inside is drawn only when
    some frame's lips part (then for every frame, through its own mask:
    closed lips stay the bare warp). palettes: the images' `mouth_palette`s,
    batched, when known (the face bank keeps them); else taken here.
    smile_folds: as in `warp_image`, each frame by its own points."""
    size = images.shape[1]
    coords = batch_source_coordinates(source_points, target_points, size)
    frames = jax.vmap(lambda image, c: _bilinear(image, c[..., 0], c[..., 1]))(images, coords)
    if mouth_interior:
        def draw():
            colours = palettes if palettes is not None else jax.vmap(mouth.mouth_palette)(images, source_points)
            return jax.vmap(mouth.draw_mouth_interior)(frames, colours, source_points, target_points)

        frames = jax.lax.cond(jnp.any(jax.vmap(mouth.lips_part)(source_points, target_points)), draw,
                              lambda: frames)
    if smile_folds:
        frames = jax.vmap(folds.draw_smile_folds)(frames, source_points, target_points)
    return frames


@functools.partial(jax.jit, static_argnames=("mouth_interior", "smile_folds"))
def warp_sequence(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
                  mouth_interior: bool = True, smile_folds: bool = True) -> jax.Array:
    """Every frame of one or many landmark sequences, from one source image.

    image: (S, S, 3) uint8 or float; source_points (68, 2); target_points
    (..., 68, 2) (e.g. (K, T, 68, 2)), all in pixels of the S x S image.
    mouth_interior, smile_folds: as in `warp_image` (the interior's colours
    are taken from the image once for all frames). Returns (..., S, S, 3) uint8.
    """
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"square images only, got {image.shape}")
    lead = target_points.shape[:-2]
    flat = target_points.reshape(-1, landmarks.NUM_POINTS, 2)
    source = image.astype(jnp.float32)
    palette = mouth.mouth_palette(source, source_points) if mouth_interior else None
    frames = jax.lax.map(lambda t: _warp_frame(source, source_points, t, palette, smile_folds), flat)
    frames = jnp.clip(jnp.round(frames), 0, 255).astype(jnp.uint8)
    return frames.reshape(*lead, *frames.shape[1:])
