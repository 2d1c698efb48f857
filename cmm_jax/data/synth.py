"""Procedural smile landmark sequences: the model behind the `smile_synth` dataset.

A clip is made in four steps:
1. identity: a neutral 68-point face (the aligned-crop template of
   `cmm_jax.face`, randomly reshaped), a per-point depth and a head pose;
2. expression: action-unit (AU) displacement fields on the neutral face, with
   intensity curves (neutral hold, onset, apex, offset) whose timing, size and
   symmetry depend on the class (posed / spontaneous) and whose AU mix is the
   style (the ground-truth mode);
3. head: a small 3D rotation per frame (the head tilts back in a laugh),
   orthographic projection, a random camera scale and position;
4. measurement: a similarity from the FIRST frame's outer eye corners and nose
   tip onto the template (as for real videos, so head motion stays in the data),
   then detector-like Gaussian noise on every point.

Geometry in steps 1-3 is in units of the inter-ocular distance (IOD, outer eye
corners 36-45) in a face frame: origin at the eye-corner midpoint, x to the
image right (the subject's left), y down, z towards the camera.

Class dynamics follow the smile-dynamics literature (Schmidt et al. 2006;
Dibeklioglu, Salah & Gevers, ECCV 2012): posed smiles have faster onsets,
larger amplitude and more left/right asymmetry; spontaneous ones have slower
onsets, a longer apex and the Duchenne marker (AU6, cheek raise) in every style.
The numbers are our choices, tuned so that the classes and styles are reliably
told apart by a small sequence classifier while each stays a plausible smile.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from cmm_jax import face, landmarks

CLASSES = ("posed", "spontaneous")
STYLES = ("closed_lip", "open_lip", "broad_laugh", "eyes_closing", "one_sided")
# Share of each style within a class (rows of STYLES order). Posed: 3 styles
# with prior >= 10 %, spontaneous: 4.
STYLE_PRIORS = {
    "posed": [0.25, 0.35, 0.05, 0.05, 0.30],
    "spontaneous": [0.25, 0.20, 0.25, 0.25, 0.05],
}

# Durations are given for REFERENCE_FRAMES-frame clips and scale with the clip
# length, so that a shorter clip still shows the whole smile.
REFERENCE_FRAMES = 32


@functools.cache
def _template_unit() -> np.ndarray:
    """The crop template in face-frame IOD units (68, 2), read-only."""
    template = face.mean_neutral_shape(landmarks.CROP_SIZE).astype(np.float64)
    eye_mid = 0.5 * (template[landmarks.RIGHT_EYE_OUTER] + template[landmarks.LEFT_EYE_OUTER])
    unit = (template - eye_mid) / landmarks.inter_ocular_distance(template)
    unit.setflags(write=False)
    return unit


def _mirror_field(field: np.ndarray) -> np.ndarray:
    """A displacement field's left-right mirror image. (68, 2) -> (68, 2)."""
    return (field * np.array([-1.0, 1.0]))[landmarks.MIRROR]


def _field(entries: dict[int, tuple[float, float]]) -> np.ndarray:
    field = np.zeros((landmarks.NUM_POINTS, 2))
    for index, displacement in entries.items():
        field[index] = displacement
    return field


def _symmetric_field(one_side: dict[int, tuple[float, float]]) -> np.ndarray:
    """A field given on the subject's right side (image left), mirrored to the left."""
    right = _field(one_side)
    field = right + _mirror_field(right)
    # Points on the midline appear on both sides: count them once.
    midline = landmarks.MIRROR == np.arange(landmarks.NUM_POINTS)
    field[midline] *= 0.5
    return field


# Lip-corner pull of the subject's right corner (48, image left) at intensity 1:
# out and up; neighbouring lip points follow with falling weights, the lower lip
# mostly sideways (it stretches rather than rises).
_CORNER_PULL = np.array([-0.105, -0.085])  # |.| = 0.135 IOD at intensity 1


def _au12_right() -> np.ndarray:
    upper = {48: 1.0, 60: 0.9, 49: 0.6, 61: 0.35, 50: 0.3, 51: 0.08, 62: 0.08}
    lower = {59: 0.55, 67: 0.35, 58: 0.25, 57: 0.08, 66: 0.08}
    entries = {i: tuple(w * _CORNER_PULL) for i, w in upper.items()}
    entries.update({i: (w * _CORNER_PULL[0], w * 0.25 * _CORNER_PULL[1]) for i, w in lower.items()})
    # The cheek bulges: jaw contour at cheek height out a little, nose wing up.
    entries.update({2: (-0.012, -0.01), 3: (-0.018, -0.012), 4: (-0.012, -0.008), 31: (-0.01, -0.012)})
    field = _field(entries)
    # Midline points (51, 57, 62, 66) must not move sideways from one corner's pull.
    midline = landmarks.MIRROR == np.arange(landmarks.NUM_POINTS)
    field[midline, 0] = 0.0
    return field


def _au6() -> np.ndarray:
    """Cheek raise: lower lids up, eyes narrow, outer brows and cheeks move."""
    return _symmetric_field({
        40: (0.0, -0.04), 41: (0.0, -0.04),  # lower lid up
        36: (0.004, -0.012),  # outer eye corner pushed up and in (crow's feet)
        37: (0.0, 0.008), 38: (0.0, 0.006),  # upper lid a little down
        17: (0.0, 0.03), 18: (0.0, 0.025), 19: (0.0, 0.012),  # outer brow lowered
        1: (0.0, -0.015), 2: (0.0, -0.025), 3: (0.0, -0.02),  # cheek contour up
        48: (0.0, -0.015), 31: (0.0, -0.01),  # corner and nose wing lifted by the cheek
    })


def _au25() -> np.ndarray:
    """Lips part: lower lip down, upper lip a little up (teeth show)."""
    return _symmetric_field({
        66: (0.0, 0.10), 67: (0.0, 0.085),
        62: (0.0, -0.025), 61: (0.0, -0.022),
        57: (0.0, 0.05), 58: (0.0, 0.045), 59: (0.0, 0.025),
        51: (0.0, -0.015), 50: (0.0, -0.013),
    })


def _au26() -> np.ndarray:
    """Jaw drop: the chin region of the jaw line and the lower lip down.

    The jaw rotates about the ear: points move down by how close they are to
    the chin (8); the lip corners follow a third of the way and draw in.
    """
    jaw_weights = {8: 1.0, 7: 0.95, 6: 0.82, 5: 0.62, 4: 0.38, 3: 0.17, 2: 0.05}
    entries = {i: (0.0, 0.30 * w) for i, w in jaw_weights.items()}
    lip_weights = {57: 0.85, 58: 0.82, 59: 0.7, 66: 0.88, 67: 0.85}
    entries.update({i: (0.0, 0.30 * w) for i, w in lip_weights.items()})
    entries.update({48: (0.02, 0.09), 60: (0.015, 0.105), 49: (0.005, 0.03), 61: (0.0, 0.02)})
    return _symmetric_field(entries)


# Upper-lid point -> the lower-lid point below it (eye closure pulls one to the other).
EYELID_PAIRS = np.array([(37, 41), (38, 40), (43, 47), (44, 46)])
# Eye closure at intensity 1 closes this share of the remaining lid gap.
EYE_CLOSURE_REACH = 0.95

# Linear AU displacement fields (F, 68, 2), intensity 1, IOD units, order:
AU_FIELDS = ("au12_right", "au12_left", "au6", "au25", "au26")


@functools.cache
def _au_basis() -> np.ndarray:
    right = _au12_right()
    basis = np.stack([right, _mirror_field(right), _au6(), _au25(), _au26()])
    basis.setflags(write=False)
    return basis


# Apex intensities of each style before class modulation:
# (AU12, AU25, AU26, AU6 the style itself needs, AU43, one-sided).
_STYLE_AUS = {
    "closed_lip": dict(au12=0.8, au25=0.0, au26=0.0, au6=0.0, au43=0.0),
    "open_lip": dict(au12=1.15, au25=1.5, au26=0.25, au6=0.0, au43=0.0),
    "broad_laugh": dict(au12=1.2, au25=1.2, au26=1.0, au6=0.8, au43=0.2),
    "eyes_closing": dict(au12=1.1, au25=0.7, au26=0.1, au6=2.2, au43=1.0),
    "one_sided": dict(au12=1.5, au25=0.15, au26=0.0, au6=0.0, au43=0.0),
}
# Strength of the weak side of a one-sided smile, relative to the strong side.
ONE_SIDED_WEAK_SIDE = 0.0

# Class dynamics, durations in frames of a REFERENCE_FRAMES clip (uniform ranges).
_DYNAMICS = {
    "posed": dict(
        onset=(3.0, 5.0), apex=(4.0, 8.0), offset=(4.0, 7.0), amplitude=(0.9, 1.1),
        asymmetry_std=0.15, duchenne=(0.0, 0.3),
    ),
    "spontaneous": dict(
        onset=(8.0, 12.0), apex=(8.0, 14.0), offset=(8.0, 14.0), amplitude=(0.75, 0.9),
        asymmetry_std=0.05, duchenne=(0.3, 0.7),
    ),
}
NEUTRAL_HOLD = (1, 4)  # frames of neutral face before the onset (inclusive range)


@functools.cache
def _depth_template() -> np.ndarray:
    """Depth z (towards the camera) of each point, IOD units, (68,).

    A face curves back with the square of the distance from the midline; the
    nose, lips, brow ridge and chin stand out; the jaw's top points sit at the ears.
    """
    x = _template_unit()[:, 0]
    depth = -0.9 * x**2
    bumps = {27: 0.05, 28: 0.12, 29: 0.2, 30: 0.3, 31: 0.1, 32: 0.15, 33: 0.2, 34: 0.15, 35: 0.1,
             0: -0.15, 16: -0.15, 1: -0.08, 15: -0.08, 7: 0.05, 8: 0.06, 9: 0.05}
    for index, bump in bumps.items():
        depth[index] += bump
    depth[list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)] += 0.08
    depth[list(landmarks.RIGHT_BROW + landmarks.LEFT_BROW)] += 0.05
    depth.setflags(write=False)
    return depth


# The head turns about the neck: below and behind the eyes.
HEAD_PIVOT = np.array([0.0, 1.3, -1.0])


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(*bounds))


def sample_identity(rng: np.random.Generator) -> dict:
    """A random person: neutral shape, depth and head pose.

    Returns a dict with
      neutral: (68, 2) face-frame IOD units; depth: (68,) IOD units;
      pose: (3,) yaw, pitch, roll in radians;
      and the shape parameters drawn (relative changes or IOD offsets).
    """
    neutral = _template_unit().copy()
    params = dict(
        face_width=_uniform(rng, (-0.08, 0.08)),  # relative jaw x-scale
        eye_distance=_uniform(rng, (-0.06, 0.06)),  # relative, IOD
        mouth_width=_uniform(rng, (-0.08, 0.08)),  # relative
        lower_face_length=_uniform(rng, (-0.08, 0.08)),  # relative, below the nose tip
        nose_length=_uniform(rng, (-0.05, 0.05)),  # IOD, nose tip and wings down
        brow_height=_uniform(rng, (-0.05, 0.05)),  # IOD, positive = lower brows
    )
    jaw = list(landmarks.JAW)
    neutral[jaw, 0] *= 1.0 + params["face_width"]
    half_shift = 0.5 * params["eye_distance"]
    neutral[list(landmarks.RIGHT_EYE), 0] -= half_shift
    neutral[list(landmarks.LEFT_EYE), 0] += half_shift
    neutral[list(landmarks.RIGHT_BROW), 0] -= 0.5 * half_shift
    neutral[list(landmarks.LEFT_BROW), 0] += 0.5 * half_shift
    mouth = list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    mouth_center_x = neutral[mouth, 0].mean()
    neutral[mouth, 0] = mouth_center_x + (neutral[mouth, 0] - mouth_center_x) * (1.0 + params["mouth_width"])
    nose = params["nose_length"]
    neutral[list(landmarks.NOSE_BOTTOM) + [30], 1] += nose
    neutral[29, 1] += 2.0 * nose / 3.0
    neutral[28, 1] += nose / 3.0
    nose_tip_y = neutral[landmarks.NOSE_TIP, 1]
    below = neutral[:, 1] > nose_tip_y
    neutral[below, 1] = nose_tip_y + (neutral[below, 1] - nose_tip_y) * (1.0 + params["lower_face_length"])
    neutral[list(landmarks.RIGHT_BROW + landmarks.LEFT_BROW), 1] += params["brow_height"]

    # Small smooth per-point variation: a few random Gaussian bumps of displacement.
    centers = rng.uniform([-0.8, -0.6], [0.8, 1.4], size=(6, 2))
    vectors = rng.normal(0.0, 0.02, size=(6, 2))
    squared = ((neutral[:, None, :] - centers[None]) ** 2).sum(-1)
    neutral += np.exp(-squared / (2 * 0.35**2)) @ vectors

    pose = np.deg2rad(rng.uniform(-5.0, 5.0, size=3))
    return dict(neutral=neutral, depth=np.array(_depth_template()), pose=pose, **params)


def _ramp(progress: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 ramp (raised cosine) of progress clipped to [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(progress, 0.0, 1.0))


def _smooth_wiggle(rng: np.random.Generator, times: np.ndarray, num_frames: int) -> np.ndarray:
    """A smooth random curve in about [-1, 1], zero at t = 0. (T,)."""
    frequency = rng.uniform(0.5, 2.0, size=2) * (2 * np.pi / num_frames)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    curve = np.sin(times[:, None] * frequency + phase) - np.sin(phase)
    return 0.25 * curve.sum(-1)


def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3): roll @ pitch @ yaw. Positive pitch tilts the head back."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rot_yaw = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    # y down, z to the camera: a positive pitch moves the nose tip (z > 0) up.
    rot_pitch = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    rot_roll = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rot_roll @ rot_pitch @ rot_yaw


def sample_clip(
    rng: np.random.Generator,
    identity: dict,
    label: int,
    style: int | None = None,
    num_frames: int = REFERENCE_FRAMES,
    noise_std: float = 0.01,
) -> tuple[np.ndarray, int]:
    """One smile of `identity` of class CLASSES[label].

    style: index into STYLES, or None to draw it from STYLE_PRIORS of the class.
    noise_std: detector noise, in IOD units (0.01 IOD = 0.26 px in a 64 crop).
    Returns (landmarks float32 (T, 68, 2) in 64x64 aligned-crop pixels, style).
    Frame 0 is neutral.
    """
    class_name = CLASSES[label]
    dynamics = _DYNAMICS[class_name]
    if style is None:
        style = rng.choice(len(STYLES), p=STYLE_PRIORS[class_name])
    style = int(style)
    style_name = STYLES[style]
    aus = _STYLE_AUS[style_name]
    time_scale = num_frames / REFERENCE_FRAMES
    times = np.arange(num_frames, dtype=np.float64)

    # Intensity envelope: neutral hold, onset ramp, apex, offset ramp.
    hold = max(1, round(rng.integers(NEUTRAL_HOLD[0], NEUTRAL_HOLD[1] + 1) * time_scale))
    onset = _uniform(rng, dynamics["onset"]) * time_scale
    apex = _uniform(rng, dynamics["apex"]) * time_scale
    offset = _uniform(rng, dynamics["offset"]) * time_scale
    envelope = _ramp((times - hold) / onset) - _ramp((times - hold - onset - apex) / offset)
    # The apex is not a frozen plateau: a small smooth fluctuation where the smile is on.
    envelope = envelope * (1.0 + 0.04 * _smooth_wiggle(rng, times, num_frames) * envelope)
    amplitude = _uniform(rng, dynamics["amplitude"])

    # Apex intensities of this clip: the style's, varied a little, then the class's.
    def jitter():
        return rng.uniform(0.9, 1.1)

    au12 = aus["au12"] * jitter() * amplitude
    left_over_right = np.exp(rng.normal(0.0, dynamics["asymmetry_std"]))
    au12_right, au12_left = au12 / np.sqrt(left_over_right), au12 * np.sqrt(left_over_right)
    if style_name == "one_sided":
        if rng.random() < 0.5:
            au12_right = ONE_SIDED_WEAK_SIDE * au12_left
        else:
            au12_left = ONE_SIDED_WEAK_SIDE * au12_right
    au6 = max(aus["au6"] * jitter(), _uniform(rng, dynamics["duchenne"])) * amplitude
    au25 = aus["au25"] * jitter() * amplitude
    au26 = aus["au26"] * jitter() * amplitude
    # Eye closure is nearly all-or-nothing: no class amplitude on it.
    au43 = min(aus["au43"] * jitter(), 1.0)

    apex_intensities = np.array([au12_right, au12_left, au6, au25, au26])
    intensities = envelope[:, None] * apex_intensities  # (T, F)
    shapes = identity["neutral"][None] + np.einsum("tf,fpc->tpc", intensities, _au_basis())
    if au43 > 0:
        upper, lower = EYELID_PAIRS[:, 0], EYELID_PAIRS[:, 1]
        closure = (EYE_CLOSURE_REACH * au43 * envelope)[:, None, None]
        shapes[:, upper] += closure * (shapes[:, lower] - shapes[:, upper])

    # Head: identity pose + a per-clip offset + motion during the smile. A laugh
    # throws the head back; every smile drifts a little.
    clip_pose = identity["pose"] + np.deg2rad(rng.uniform(-1.5, 1.5, size=3))
    tilt_back = np.deg2rad(rng.uniform(3.0, 6.0) if style_name == "broad_laugh" else rng.uniform(0.0, 2.0))
    drift = np.deg2rad(0.5) * np.stack([_smooth_wiggle(rng, times, num_frames) for _ in range(3)], -1)
    angles = clip_pose + drift + np.outer(envelope, [0.0, tilt_back, 0.0])  # (T, 3)
    rotations = _rotations(angles[:, 0], angles[:, 1], angles[:, 2])
    points_3d = np.concatenate([shapes, np.broadcast_to(identity["depth"][None, :, None], shapes.shape[:2] + (1,))], -1)
    rotated = np.einsum("tij,tpj->tpi", rotations, points_3d - HEAD_PIVOT) + HEAD_PIVOT
    shift = 0.01 * np.stack([_smooth_wiggle(rng, times, num_frames) for _ in range(2)], -1)
    projected = rotated[..., :2] + shift[:, None, :]  # orthographic

    # Camera: an arbitrary face size and position in a 640x480 frame.
    camera = projected * rng.uniform(60.0, 120.0) + rng.uniform([200.0, 150.0], [440.0, 330.0])

    # Align every frame with the first frame's transform, then detector noise.
    aligned = landmarks.apply_affine(face.alignment_matrix(camera[0]), camera)
    template_iod = landmarks.inter_ocular_distance(face.mean_neutral_shape(landmarks.CROP_SIZE))
    aligned = aligned + rng.normal(0.0, noise_std * template_iod, size=aligned.shape)
    return aligned.astype(np.float32), style


def subject_name(subject: int) -> str:
    return f"synth_{subject:05d}"


def generate_examples(
    seed: int,
    num_subjects: int,
    clips_per_class: int,
    num_frames: int = REFERENCE_FRAMES,
    noise_std: float = 0.01,
    subject_offset: int = 0,
) -> Iterator[tuple[str, dict]]:
    """Yield (key, example) for subjects subject_offset ... + num_subjects - 1.

    Every subject gets `clips_per_class` clips of each class. example:
    landmarks float32 (T, 68, 2), label int, style int, subject str, video str.
    Each identity and each clip has its own generator seeded by
    (seed, subject[, label, clip]), so an example does not depend on what else
    is generated or in which order; disjoint subject ranges give disjoint people.
    """
    for subject in range(subject_offset, subject_offset + num_subjects):
        identity = sample_identity(np.random.default_rng([seed, subject]))
        for label, class_name in enumerate(CLASSES):
            for clip in range(clips_per_class):
                rng = np.random.default_rng([seed, subject, label, clip])
                points, style = sample_clip(rng, identity, label, num_frames=num_frames, noise_std=noise_std)
                video = f"{subject_name(subject)}_{class_name}_{clip}"
                yield video, dict(
                    landmarks=points, label=label, style=style, subject=subject_name(subject), video=video
                )
