"""The folds a smile makes in the skin, drawn in JAX: nasolabial (AU12) and around the eyes (AU6).

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

A smile that reaches the eyes (the Duchenne smile, AU6 + AU12) also raises
the cheeks: orbicularis oculi pushes the skin below the eye up towards it, so
the lower lid rises and bunches with a furrow below it, and crow's-feet
wrinkles fan out from the outer eye corner (FACS Manual, AU6: "raises the
infraorbital triangle ... pushes the skin surrounding the eye towards the eye
socket ... crow's-feet wrinkles may appear"). `draw_eye_folds` shades, per
eye, where its lower lid has risen from the source's (relative to the eye's
corners, so head motion and blinks of the upper lid do not count), a soft
furrow along the lower lid below it with the bunched lid's light above, and
three short faint lines from the outer corner; lengths are shares of the
target's inter-ocular distance. `draw_smile_folds` draws both.

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

# Per eye (image left, then right): outer corner, inner corner, lower lid (outer to inner).
EYES = ((landmarks.RIGHT_EYE_OUTER, 39, (41, 40)), (landmarks.LEFT_EYE_OUTER, 42, (46, 47)))
# The lower lid's rise above the eye corners' line, beyond the source's, in
# source inter-ocular distances: the eye folds show from LID_FROM and are full
# from LID_FULL (smile_synth's full AU6 lifts the lid about 0.04).
LID_FROM, LID_FULL = 0.004, 0.03
# The furrow: LID_FURROW_BELOW inter-ocular distances below the lower lid,
# darkening per channel and Gaussian sigma; the bunched lid's light above it.
LID_FURROW_BELOW, LID_FURROW_WIDTH, LID_FURROW_DARKEN = 0.06, 0.012, (0.14, 0.19, 0.23)
LID_BULGE_LIGHTEN, LID_BULGE_WIDTH = 0.04, 0.015
# Crow's feet: lines from CROW_START to CROW_START + CROW_LENGTH inter-ocular
# distances beyond the outer corner, at these angles (degrees, from the
# corners' line outwards, negative: upwards), sigma and darkening.
CROW_START, CROW_LENGTH, CROW_ANGLES = 0.04, 0.09, (-28.0, -4.0, 22.0)
CROW_WIDTH, CROW_DARKEN = 0.007, (0.12, 0.16, 0.2)
# The eyes' window (height, width) as shares of the frame's side, placed on the
# eye corners: the template's folds, at twice their reach, fit in it.
EYE_WINDOW = (0.25, 0.75)


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


def nearest_on_curve(xs: jax.Array, ys: jax.Array, curve: jax.Array, out: jax.Array):
    """Each pixel (xs, ys)'s nearest point of the polyline `curve` (V, 2):
    (squared distance, share of the way along the curve in [0, 1], the offset
    towards it projected on the unit vector `out` (2,)), each like xs."""
    best = jnp.full_like(xs, jnp.inf)
    share = side = jnp.zeros_like(xs)
    segments = curve.shape[0] - 1
    for i in range(segments):  # 2-D passes: XLA vectorises these better than a segment axis
        (x0, y0), (dx, dy) = curve[i], curve[i + 1] - curve[i]
        ox, oy = xs - x0, ys - y0
        along = jnp.clip((ox * dx + oy * dy) / jnp.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        nx, ny = ox - along * dx, oy - along * dy
        distance2 = nx * nx + ny * ny
        nearer = distance2 < best
        best = jnp.where(nearer, distance2, best)
        share = jnp.where(nearer, (i + along) / segments, share)
        side = jnp.where(nearer, nx * out[0] + ny * out[1], side)
    return best, share, side


def _taper(share: jax.Array) -> jax.Array:
    """0 at the curve's ends, 1 from a quarter of the way to 70 % of it, smooth between."""
    return mouth.smoothstep(share, 0.0, 0.25) * (1.0 - mouth.smoothstep(share, 0.7, 1.0))


def _fold_shading(xs: jax.Array, ys: jax.Array, curve: jax.Array, out: jax.Array, strength: jax.Array,
                  width: jax.Array):
    """(crease, bulge), each like xs: one side's crease darkness and cheek-side
    light in [0, 1] at pixels (xs, ys), from the nearest point of the polyline
    `curve` (V, 2) of that side's fold; `out` (2,) is the unit vector to the
    cheek, `width` the mouth width."""
    best, share, side = nearest_on_curve(xs, ys, curve, out)
    taper = strength * _taper(share)
    crease = taper * jnp.exp(-0.5 * best / (CREASE_WIDTH * width) ** 2)
    bulge = jnp.where(best < (3 * BULGE_OFFSET * width) ** 2,
                      taper * jnp.exp(-0.5 * ((side - BULGE_OFFSET * width) / (BULGE_WIDTH * width)) ** 2), 0.0)
    return crease, bulge


def draw_nasolabial_folds(frame: jax.Array, source_points: jax.Array, target_points: jax.Array) -> jax.Array:
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


def _eye_directions(points: jax.Array, outer: int, inner: int):
    """Unit vectors of one eye (2,) each: from its inner corner towards the temple, and down the face."""
    axis = points[outer] - points[inner]
    out = axis / jnp.maximum(jnp.sqrt((axis**2).sum()), 1e-6)
    # The image's left eye (outer corner 36) looks out towards -x, so its 'down' is the other perpendicular.
    return out, (-1.0 if outer == landmarks.RIGHT_EYE_OUTER else 1.0) * jnp.stack([-out[1], out[0]])


def eye_fold_strengths(source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """(2,) in [0, 1], per eye (image left, right): how far its lower lid has
    risen above the line of the eye's corners, beyond the source's, through
    LID_FROM .. LID_FULL source inter-ocular distances."""
    iod = jnp.maximum(landmarks.inter_ocular_distance(source_points), 1e-6)

    def lid_height(points, outer, inner, lid):  # the lid's mean height above the corners' line
        _, down = _eye_directions(points, outer, inner)
        return -((points[jnp.asarray(lid)] - 0.5 * (points[outer] + points[inner])) @ down).mean()

    return jnp.stack([
        mouth.smoothstep((lid_height(target_points, *eye) - lid_height(source_points, *eye)) / iod, LID_FROM, LID_FULL)
        for eye in EYES
    ])


def _eye_curves(points: jax.Array, outer: int, inner: int, lid: tuple[int, int]):
    """One eye's furrow below the lower lid (inner corner to outer, (4, 2)), the
    unit 'down' vector (2,), and its crow's feet ((2, 2) each: start, end), in pixels."""
    iod = landmarks.inter_ocular_distance(points)
    out, down = _eye_directions(points, outer, inner)
    lid_line = jnp.stack([points[inner], points[lid[1]], points[lid[0]], points[outer]])
    furrow = lid_line + LID_FURROW_BELOW * iod * down
    feet = []
    for angle in CROW_ANGLES:
        radians = jnp.deg2rad(angle)
        direction = jnp.cos(radians) * out + jnp.sin(radians) * down
        start = points[outer] + CROW_START * iod * direction
        feet.append(jnp.stack([start, start + CROW_LENGTH * iod * direction]))
    return furrow, down, feet


def draw_eye_folds(frame: jax.Array, source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """The frame with each eye's AU6 folds (the furrow below the risen lower lid,
    the bunched lid's light, crow's feet) shaded by `eye_fold_strengths`;
    `frame` itself while neither lower lid has risen (then nothing is computed,
    outside `vmap`). Only EYE_WINDOW of the frame around the eyes is drawn."""
    size = frame.shape[0]
    strengths = eye_fold_strengths(source_points, target_points)
    height, width_px = mouth.window_shape(size, EYE_WINDOW)
    iod = landmarks.inter_ocular_distance(target_points)

    def paint(window, pixels):
        xs, ys = pixels[..., 0], pixels[..., 1]
        darken = jnp.zeros((height, width_px, 3))
        lighten = jnp.zeros((height, width_px))
        for strength, eye in zip(strengths, EYES):
            furrow, down, feet = _eye_curves(target_points, *eye)
            best, share, side = nearest_on_curve(xs, ys, furrow, down)
            taper = strength * _taper(share)
            darken = jnp.maximum(darken, (taper * jnp.exp(-0.5 * best / (LID_FURROW_WIDTH * iod) ** 2))[..., None]
                                 * jnp.asarray(LID_FURROW_DARKEN))
            # The bunched lid: light on the eye's side of the furrow (side < 0: towards the eye).
            bulge = taper * jnp.exp(-0.5 * ((side + 0.5 * LID_FURROW_BELOW * iod) / (LID_BULGE_WIDTH * iod)) ** 2)
            lighten = jnp.maximum(lighten, jnp.where(best < (LID_FURROW_BELOW * iod) ** 2, bulge, 0.0))
            for line in feet:
                best, share, _ = nearest_on_curve(xs, ys, line, down)
                crease = strength * _taper(share) * jnp.exp(-0.5 * best / (CROW_WIDTH * iod) ** 2)
                darken = jnp.maximum(darken, crease[..., None] * jnp.asarray(CROW_DARKEN))
        return jnp.clip(window * (1.0 - darken) * (1.0 + LID_BULGE_LIGHTEN * lighten)[..., None], 0.0, 255.0)

    def draw():
        outer = target_points[jnp.asarray([landmarks.RIGHT_EYE_OUTER, landmarks.LEFT_EYE_OUTER])]
        centre = outer.mean(0)
        origin = jnp.stack([centre[1] - 0.4 * height, centre[0] - 0.5 * width_px])
        origin = jnp.clip(jnp.round(origin).astype(jnp.int32), 0, jnp.array([size - height, size - width_px]))
        return mouth.paint_window(frame, origin, (height, width_px), paint)

    return jax.lax.cond(jnp.any(strengths > 0.0), draw, lambda: frame)


def draw_smile_folds(frame: jax.Array, source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """The frame with the smile's folds: nasolabial (`draw_nasolabial_folds`)
    and around the eyes (`draw_eye_folds`); `frame` itself for a neutral target."""
    return draw_eye_folds(draw_nasolabial_folds(frame, source_points, target_points), source_points, target_points)
