"""The nasolabial folds a smile deepens, drawn in JAX.

A warp moves the photo's pixels; it cannot make a crease that was not in the
photo. When zygomaticus major (AU12) pulls the lip corners up and back, the
skin it gathers bulges over the cheek and folds along the nasolabial furrow,
from beside the nose wing down past the mouth corner (Ekman & Friesen, FACS
Manual 2002, AU12: "deepens the nasolabial furrow ... may raise the infraorbital
triangle"). That furrow is much of what makes a smile read as one.

`draw_smile_folds` shades, on each side where the lip corner has moved up and
out from the source face (measured from the nose wing, so head motion does
not count), a soft dark crease along a curve from just beside the nose wing
(31 / 35) to beside and below the mouth corner (48 / 54), with a faint light
band on its cheek side. Its strength follows the corner's motion (0 for a
neutral frame: the frame is returned unchanged), and all lengths are shares
of the target's mouth width, so it looks the same at any size.

Shapes: frame (S, S, 3) float RGB in [0, 255]; points (68, 2) in its pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmm_jax import landmarks, mouth

# (nose wing, lip corner) per side: the image's left (the subject's right), then its right.
SIDES = ((31, landmarks.MOUTH_RIGHT), (35, landmarks.MOUTH_LEFT))
# Corner motion up and out, relative to the nose wing, in source mouth widths:
# the folds start to show from FOLD_FROM and are full from FOLD_FULL.
FOLD_FROM, FOLD_FULL = 0.01, 0.07
# The corner's pull, mostly out, partly up (zygomaticus major runs to the cheekbone).
PULL_OUT, PULL_UP = 0.9, 0.45
# The curve, in target mouth widths: it starts FOLD_TOP_OUT beside and
# FOLD_TOP_UP above the nose wing's lowest point, ends FOLD_BOTTOM_OUT beside
# and FOLD_BOTTOM_DOWN below the lip corner, and bows FOLD_BOW out at its middle.
FOLD_TOP_OUT, FOLD_TOP_UP, FOLD_BOTTOM_OUT, FOLD_BOTTOM_DOWN, FOLD_BOW = 0.06, 0.06, 0.09, 0.22, 0.04
# The crease: darkening at full strength per channel (skin in shadow is
# warmer: blue and green darken more than red), and its width (Gaussian sigma).
CREASE_DARKEN, CREASE_WIDTH = (0.18, 0.24, 0.28), 0.035
# The cheek's bulge beside it: brightening, offset to the cheek side and sigma.
BULGE_LIGHTEN, BULGE_OFFSET, BULGE_WIDTH = 0.05, 0.07, 0.04
CURVE_SEGMENTS = 6
# The drawn window, (height, width) as shares of the frame's side: the folds of
# the template's face with its mouth 1.5x as wide, and their blur, fit in it.
WINDOW = (0.4, 0.7)


def _mouth_frame(points: jax.Array):
    """(mouth width (), unit vector from the image-left corner 48 to 54 (2,), unit 'down' normal (2,))."""
    width = jnp.maximum(mouth.mouth_width(points), 1e-6)
    along = (points[landmarks.MOUTH_LEFT] - points[landmarks.MOUTH_RIGHT]) / width
    return width, along, jnp.stack([-along[1], along[0]])


def fold_strengths(source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """(2,) in [0, 1], per side (image left, right): how far the lip corner has
    moved up and out from the source's, relative to the nose wing, through
    FOLD_FROM .. FOLD_FULL source mouth widths."""
    width, along, down = _mouth_frame(source_points)
    strengths = []
    for sign, (wing, corner) in zip((-1.0, 1.0), SIDES):
        moved = (target_points[corner] - target_points[wing]) - (source_points[corner] - source_points[wing])
        direction = (PULL_OUT * sign * along - PULL_UP * down) / jnp.hypot(PULL_OUT, PULL_UP)
        strengths.append(mouth.smoothstep((moved @ direction) / width, FOLD_FROM, FOLD_FULL))
    return jnp.stack(strengths)


def _fold_curve(points: jax.Array, frame, sign: float, wing: int, corner: int) -> jax.Array:
    """(CURVE_SEGMENTS + 1, 2) pixels along one side's fold (a quadratic Bezier),
    top to bottom; frame: `_mouth_frame(points)`."""
    width, along, down = frame
    out = sign * along
    top = points[wing] + width * (FOLD_TOP_OUT * out - FOLD_TOP_UP * down)
    bottom = points[corner] + width * (FOLD_BOTTOM_OUT * out + FOLD_BOTTOM_DOWN * down)
    middle = 0.5 * (top + bottom) + FOLD_BOW * width * out
    u = jnp.linspace(0.0, 1.0, CURVE_SEGMENTS + 1)[:, None]
    return (1 - u) ** 2 * top + 2 * u * (1 - u) * middle + u**2 * bottom


def _fold_shading(xs: jax.Array, ys: jax.Array, curve: jax.Array, out: jax.Array, strength: jax.Array,
                  width: jax.Array):
    """(crease, bulge), each like xs: one side's crease darkness and cheek-side
    light in [0, 1] at pixels (xs, ys), from the nearest point of the polyline
    `curve` (V, 2) of that side's fold; `out` (2,) is the unit vector to the
    cheek, `width` the mouth width."""
    best = jnp.full_like(xs, jnp.inf)
    taper = side = jnp.zeros_like(xs)
    segments = curve.shape[0] - 1
    for i in range(segments):  # 2-D passes: XLA vectorises these better than a segment axis
        (x0, y0), (dx, dy) = curve[i], curve[i + 1] - curve[i]
        ox, oy = xs - x0, ys - y0
        along = jnp.clip((ox * dx + oy * dy) / jnp.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        nx, ny = ox - along * dx, oy - along * dy
        distance2 = nx * nx + ny * ny
        nearer = distance2 < best
        share = (i + along) / segments
        best = jnp.where(nearer, distance2, best)
        taper = jnp.where(nearer, mouth.smoothstep(share, 0.0, 0.25) * (1.0 - mouth.smoothstep(share, 0.7, 1.0)), taper)
        side = jnp.where(nearer, nx * out[0] + ny * out[1], side)
    taper = strength * taper
    crease = taper * jnp.exp(-0.5 * best / (CREASE_WIDTH * width) ** 2)
    bulge = jnp.where(best < (3 * BULGE_OFFSET * width) ** 2,
                      taper * jnp.exp(-0.5 * ((side - BULGE_OFFSET * width) / (BULGE_WIDTH * width)) ** 2), 0.0)
    return crease, bulge


def draw_smile_folds(frame: jax.Array, source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """The frame with each side's nasolabial fold shaded by `fold_strengths`;
    `frame` itself while neither corner has moved up and out (then nothing is
    computed, outside `vmap`). Only a window around the mouth and the nose
    wings is drawn (WINDOW of the frame's side, placed on the points)."""
    size = frame.shape[0]
    strengths = fold_strengths(source_points, target_points)
    height, width_px = mouth.window_shape(size, WINDOW)

    def paint(window, pixels):
        mouth_frame = _mouth_frame(target_points)
        width, along, _ = mouth_frame
        xs, ys = pixels[..., 0], pixels[..., 1]
        darken = lighten = jnp.zeros((height, width_px))
        for strength, sign, (wing, corner) in zip(strengths, (-1.0, 1.0), SIDES):
            curve = _fold_curve(target_points, mouth_frame, sign, wing, corner)
            crease, bulge = _fold_shading(xs, ys, curve, sign * along, strength, width)
            darken, lighten = jnp.maximum(darken, crease), jnp.maximum(lighten, bulge)
        shaded = window * (1.0 - jnp.asarray(CREASE_DARKEN) * darken[..., None])
        return jnp.clip(shaded * (1.0 + BULGE_LIGHTEN * lighten)[..., None], 0.0, 255.0)

    def draw():
        centre = 0.5 * (target_points[landmarks.MOUTH_RIGHT] + target_points[landmarks.MOUTH_LEFT])
        top = 0.5 * (target_points[31, 1] + target_points[35, 1])
        origin = jnp.stack([centre[1] + 0.5 * (top - centre[1]) - 0.35 * height, centre[0] - 0.5 * width_px])
        origin = jnp.clip(jnp.round(origin).astype(jnp.int32), 0, jnp.array([size - height, size - width_px]))
        return mouth.paint_window(frame, origin, (height, width_px), paint)

    return jax.lax.cond(jnp.any(strengths > 0.0), draw, lambda: frame)
