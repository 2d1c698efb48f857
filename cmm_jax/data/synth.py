"""Procedural smile landmark sequences (v2): the model behind the `smile_synth` dataset.

A clip is made in four steps:
1. identity (`sample_identity`): a neutral 68-point face (the aligned-crop
   template of `cmm_jax.face`, randomly reshaped: face width, eye distance,
   mouth width, lower-face length, nose, brows, lip thickness, eye aperture,
   a resting asymmetry), a per-point depth, a head pose, a facial side bias
   and a personal style repertoire per class;
2. expression (`clip_latents` draws, `render_clip` renders): action-unit (AU)
   displacement fields COMPUTED FROM THAT PERSON'S NEUTRAL FACE
   (`action_units.au_basis`),
   with intensity curves (neutral hold, onset, apex, offset) whose timing, size,
   symmetry and Duchenne marker depend on the class, and whose AU mix is the
   style (the ground-truth mode) varied continuously and blended with a second
   style;
3. head: a small 3D rotation per frame (the head tilts back with the jaw drop
   of a laugh), orthographic projection, a random camera scale and position;
4. measurement: a similarity from the FIRST frame's outer eye corners and nose
   tip onto the template (as for real videos, so head motion stays in the
   data), then tracker-like noise: temporally correlated (AR(1) over frames,
   per point and coordinate) with occasional outlier points.

Geometry in steps 1-3 is in units of the template's inter-ocular distance
(IOD, outer eye corners 36-45) in a face frame: origin at the eye-corner
midpoint, x to the image right (the subject's left), y down, z towards the
camera. `clip_latents` holds every random draw of a clip and nothing computed
from a face, so the same clip can be rendered on another person
(`render_clip`): what changes then is what the face itself changes.

Face-dependent relations (what v1 lacked: there the AU fields were fixed in
IOD units, so a clip moved every face by nearly the same displacements)
------------------------------------------------------------------------
`action_units.au_basis(neutral)` derives each field from the neutral shape alone (it is
similarity-equivariant: the analytic judge `cmm_jax.data.synth_fit` calls it on
a sequence's frame 0):

* AU12, lip-corner pull, per side: zygomaticus major runs from the zygomatic
  bone to the modiolus at the mouth corner and pulls the corner along its own
  line (Ekman, Friesen & Hager, FACS manual 2002, AU12; origin/insertion
  geometry: Pessa et al. 1998, "Variability of the midfacial muscles: analysis
  of 50 hemifacial cadaver dissections", Plast. Reconstr. Surg.). The corner
  moves along the unit vector from that person's corner (48 / 54) to a
  cheekbone point on the face outline at cheekbone height (the mean of jaw
  points 1-2 / 15-14), so the direction depends on face width, lower-face
  length and mouth width. The reach is a fixed share of the muscle's length
  (a muscle shortens by a fraction of its resting length), so longer muscles
  (wider faces, longer lower faces, narrower mouths) give larger excursions.
  The lip neighbours follow with falling weights (v1's), and the red lips
  thin as the mouth stretches (tissue is nearly incompressible: vermilion
  height x width is kept), by an amount that scales with the lip thickness.
* AU6, cheek raise (the Duchenne marker): the lower lid rises by a share of
  that eye's aperture (palpebral fissure height) - the lid cannot rise past
  the upper lid, so the aperture is the natural scale and the limit (FACS
  2002, AU6: "narrows the eye aperture"). Crow's feet, brow and cheek parts are
  fixed in IOD units.
* AU43/45, eye closure: the upper lid travels down the person's own lid gap
  (intensity 1 = closed); AU6 + closure is capped below a full closure.
* AU25, lips part: scales with the person's lip thickness (sum of the upper
  and lower vermilion heights). FACS describes lip parting by the exposure of
  the lips' inner surfaces; we model the visible separation of the inner lip
  contour as proportional to lip bulk. This is our modelling assumption, not
  a measured law.
* AU26, jaw drop: the mandible rotates about the temporomandibular joint, so
  for a given opening angle the chin travels in proportion to the mandible's
  length; we scale the field by the lower-face length (nose tip to chin),
  pure rigid-body kinematics.
* AU10, upper-lip raise: levator labii superioris spans the infraorbital
  rim to the upper lip; the field scales with that span (eye line to the
  upper lip's centre), as AU12's with its muscle.

Person traits (drawn per identity, the first two visible in the neutral face)
* Side bias: people differ in which side of the face is more expressive, and
  structural (neutral) asymmetry predicts the asymmetry at the expression's
  peak (Schmidt, Liu & Cohn 2006, "The role of structural facial asymmetry in
  asymmetry of peak facial expressions", Laterality 11:540-561). Each person
  has a `side_bias` (log ratio left/right of AU12 strength) that also raises
  the stronger side's mouth corner a little in the neutral face (our choice of
  how the structural asymmetry shows); every clip adds its own asymmetry, and
  a one-sided smile uses the person's stronger side.
* Age: older faces have thinner lips, narrower eye apertures and sagging
  mouth corners, and move less soft tissue when they smile (Tanikawa et al.
  2019, "Functional decline in facial expression generation in older women: a
  cross-sectional study using three-dimensional morphometry", PLoS ONE 14:
  e0219451). `age` shapes the neutral lips, eyes and corners and scales the
  AU intensities (`mobility`). Sforza et al. 2010 found no age effect on total
  mobility between 20 and 50 years, so the effect is kept moderate (+-17 %).
* Expressivity: a log-normal personal gain on the intensities, for the stable
  individual differences in smile amplitude (Cohn, Schmidt, Gross & Ekman
  2002, "Individual differences in facial expression: stability over time,
  relation to self-reported emotion, and ability to inform person
  identification", ICMI). Not visible in the neutral face.
* Smile type: Rubin 1974 ("The anatomy of a smile: its importance in the
  treatment of facial paralysis", Plast. Reconstr. Surg. 53:384-387) found a
  "commissure" smile (zygomaticus major dominant) in about 2/3 of people and a
  "cuspid" smile (levator labii superioris dominant: the upper lip rises with
  the corners) in about 1/3: `upper_lip_raise`, the AU10 recruited per unit
  AU12. Not visible in the neutral face.
Above a knee, intensities saturate smoothly (a muscle shortens only so far),
so the product of all these gains stays within plausible excursions.

Measured face sensitivity (`face_sensitivity`: noise-free, FIXED clip latents
rendered on 48 identities, 24 clips; std across identities of the
displacement from frame 0 in IOD, relative to the mean displacement
magnitude): v1 0.06 (the reviewer's 7 %), v2 0.24; with the traits that the
neutral face does not show (side bias, expressivity, smile type) equalised,
the neutral shape alone explains 0.14. Realistic ranges of facial proportions
(face width, mouth width, lower face: coefficients of variation ~5-9 %)
cannot give much more on their own.

Class dynamics (overlapping, not disjoint)
------------------------------------------
Posed smiles have faster onsets, larger amplitudes and more left/right
asymmetry; spontaneous ones are slower, hold the apex longer and carry more
AU6 (Ekman, Hager & Friesen 1981, "The symmetry of emotional and deliberate
facial actions", Psychophysiology 18:101-106; Cohn & Schmidt 2004, "The timing
of facial motion in posed and spontaneous smiles"; Schmidt, Ambadar, Cohn &
Reed 2006, "Movement differences between deliberate and spontaneous facial
expressions: zygomaticus major action in smiling", J. Nonverbal Behav. 30:
37-52; Dibeklioglu, Salah & Gevers, ECCV 2012, UvA-NEMO). AU6 also appears in
many posed smiles (Krumhuber & Manstead 2009, "Can Duchenne smiles be
feigned? New evidence on felt and false smiles", Emotion 9:807-820), so the
Duchenne marker is a shift in a continuous distribution, not a switch. Each
class-dependent parameter is a class-independent transform of a Gaussian with
class-dependent mean and std (`_DYNAMICS`), so the class posterior given the
true parameters is exact: `bayes_class_ceiling` = 0.889 (20000 samples), inside
the 85-92 % that the posed / spontaneous literature reaches on UvA-NEMO
(Dibeklioglu et al. 2012: 87 %). No single parameter separates the classes
better than 0.75; without the style 0.86, without amplitude and asymmetry
(which the person traits mask in the sequences) 0.86 with the style.

Styles: the class prior STYLE_PRIORS is the mean of a per-person Dirichlet
(`REPERTOIRE_CONCENTRATION`): each person has their own repertoire (typically
2-3 styles with >= 10 % share; Cohn et al. 2002 found smile characteristics
to be stable individual traits). A clip's AU apex mix is its style's
prototype, each AU varied by a log-normal factor, and blended (weight up to
BLEND_MAX, an even mix) towards a second, random style, so styles overlap.

Tracking noise: AR(1) over frames (lag-1 correlation NOISE_CORRELATION,
stationary std noise_std IOD), and in OUTLIER_FRAME_RATE of the frames 1-3
points off by 5-15 x noise_std. `render_clip` also returns the clean points.

The citations above are from the authors' memory of the literature; the
numbers in this module are our choices, guided by the direction of each
effect, not fitted to any dataset.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from cmm_jax import alignment, landmarks
from cmm_jax.data import action_units

CLASSES = ("posed", "spontaneous")
STYLES = ("closed_lip", "open_lip", "broad_laugh", "eyes_closing", "one_sided")
# Share of each style within a class (rows of STYLES order): the class prior,
# the mean of every person's repertoire. Posed: 3 styles with prior >= 10 %,
# spontaneous: 4.
STYLE_PRIORS = {
    "posed": [0.25, 0.35, 0.05, 0.05, 0.30],
    "spontaneous": [0.25, 0.20, 0.25, 0.25, 0.05],
}
# A person's repertoire for a class ~ Dirichlet(REPERTOIRE_CONCENTRATION * prior):
# at 3, a person typically uses 2-3 styles with >= 10 % share.
REPERTOIRE_CONCENTRATION = 3.0

# Durations are given for REFERENCE_FRAMES-frame clips and scale with the clip
# length, so that a shorter clip still shows the whole smile.
REFERENCE_FRAMES = 32


# ---------------------------------------------------------------------------
# Styles and class dynamics.

# Apex intensities of each style's prototype (before class amplitude):
# AU12, AU25, AU26, AU6 (the style's own, the Duchenne marker adds to it),
# eye closure, one-sidedness (share by which the weaker corner is dropped).
_STYLE_KEYS = ("au12", "au25", "au26", "au6", "eye_closure", "one_sided")
_STYLE_AUS = {
    "closed_lip": dict(au12=0.85, au25=0.0, au26=0.0, au6=0.0, eye_closure=0.0, one_sided=0.0),
    "open_lip": dict(au12=1.15, au25=1.5, au26=0.25, au6=0.0, eye_closure=0.0, one_sided=0.0),
    "broad_laugh": dict(au12=1.2, au25=1.2, au26=1.0, au6=0.5, eye_closure=0.1, one_sided=0.0),
    "eyes_closing": dict(au12=1.1, au25=0.6, au26=0.1, au6=1.2, eye_closure=0.55, one_sided=0.0),
    "one_sided": dict(au12=1.5, au25=0.15, au26=0.0, au6=0.0, eye_closure=0.0, one_sided=1.0),
}
_STYLE_MATRIX = np.array([[_STYLE_AUS[s][k] for k in _STYLE_KEYS] for s in STYLES])
STYLE_JITTER = 0.2  # std of the log-normal factor on each AU of the prototype
BLEND_MAX = 0.5  # a clip's mix moves up to this far towards a second, random style (0.5: an even mix)

# Class-dependent parameters. Each is a class-independent transform of a
# Gaussian z ~ N(mean, std) whose mean and std depend on the class:
#   onset, apex, offset: frames of a REFERENCE_FRAMES clip, log-normal (z = log);
#   amplitude: gain on every AU but the eye closure, normal;
#   asymmetry: the clip's log ratio of left to right AU12 strength (added to
#     the person's side bias), normal;
#   duchenne: AU6 added to the style's own, logit-normal (z = logit), times DUCHENNE_MAX.
_DYNAMICS = {
    "posed": dict(
        onset=(np.log(4.5), 0.32), apex=(np.log(6.5), 0.4), offset=(np.log(5.5), 0.4),
        amplitude=(1.0, 0.13), asymmetry=(0.0, 0.16), duchenne=(-1.3, 0.9),
    ),
    "spontaneous": dict(
        onset=(np.log(6.2), 0.32), apex=(np.log(8.5), 0.4), offset=(np.log(7.5), 0.4),
        amplitude=(0.9, 0.13), asymmetry=(0.0, 0.08), duchenne=(-0.3, 0.9),
    ),
}
CLASS_PARAMETERS = ("onset", "apex", "offset", "amplitude", "asymmetry", "duchenne")
DUCHENNE_MAX = 1.0
NEUTRAL_HOLD = (1, 4)  # frames of neutral face before the onset (inclusive range)


def _from_normal(name: str, z):
    if name in ("onset", "apex", "offset"):
        return np.exp(z)
    if name == "duchenne":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _to_normal(name: str, value):
    value = np.asarray(value, np.float64)
    if name in ("onset", "apex", "offset"):
        return np.log(value)
    if name == "duchenne":
        return np.log(value) - np.log1p(-value)
    return value


def class_log_likelihood(params: dict, label: int) -> np.ndarray:
    """log p(class parameters | class), up to a class-independent constant.

    params: the CLASS_PARAMETERS (arrays of any common shape) and "style" (int
    array). Densities are taken in the Gaussian z space; the Jacobians of the
    transforms do not depend on the class and cancel in the posterior.
    """
    dynamics = _DYNAMICS[CLASSES[label]]
    total = np.log(np.asarray(STYLE_PRIORS[CLASSES[label]]))[np.asarray(params["style"])]
    for name in CLASS_PARAMETERS:
        mean, std = dynamics[name]
        z = _to_normal(name, params[name])
        total = total - 0.5 * ((z - mean) / std) ** 2 - np.log(std)
    return total


def bayes_class_ceiling(num_samples: int = 20000, seed: int = 0) -> float:
    """Monte-Carlo estimate of the best possible class accuracy (balanced classes).

    Draws (class, style, CLASS_PARAMETERS) from the generating distributions
    (the style marginalised over the person's Dirichlet is the class prior) and
    averages max_c p(c | parameters), computed from the known densities. Every
    other draw of a clip (identity, style variation, head, camera, noise) does
    not depend on the class, so no classifier of the sequences can beat this.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), size=num_samples)
    params = {"style": np.zeros(num_samples, int)}
    for name in CLASS_PARAMETERS:
        params[name] = np.zeros(num_samples)
    for label, class_name in enumerate(CLASSES):
        chosen = labels == label
        count = int(chosen.sum())
        params["style"][chosen] = rng.choice(len(STYLES), size=count, p=STYLE_PRIORS[class_name])
        for name in CLASS_PARAMETERS:
            mean, std = _DYNAMICS[class_name][name]
            params[name][chosen] = _from_normal(name, rng.normal(mean, std, size=count))
    log_likelihood = np.stack([class_log_likelihood(params, label) for label in range(len(CLASSES))], -1)
    posterior = np.exp(log_likelihood - log_likelihood.max(-1, keepdims=True))
    posterior /= posterior.sum(-1, keepdims=True)
    return float(posterior.max(-1).mean())


@functools.cache
def depth_template() -> np.ndarray:
    """Depth z (towards the camera) of each point, IOD units, (68,).

    A face curves back with the square of the distance from the midline; the
    nose, lips, brow ridge and chin stand out; the jaw's top points sit at the ears.
    """
    x = action_units.template_unit()[:, 0]
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

# ---------------------------------------------------------------------------
# Identity.

# Identity shape parameters: uniform ranges (relative changes or IOD offsets).
# lip_thickness and eye_aperture get an age term on top (AGE_EFFECTS).
_SHAPE_RANGES = dict(
    face_width=(-0.12, 0.12),  # relative jaw x-scale
    eye_distance=(-0.06, 0.06),  # relative, IOD
    mouth_width=(-0.14, 0.14),  # relative
    lower_face_length=(-0.12, 0.12),  # relative, below the nose tip
    nose_length=(-0.05, 0.05),  # IOD, nose tip and wings down
    brow_height=(-0.05, 0.05),  # IOD, positive = lower brows
    lip_thickness=(-0.3, 0.3),  # relative vermilion height
    eye_aperture=(-0.2, 0.2),  # relative lid gap
)
# Age (0 = young adult, 1 = about 65, uniform): lips thin, eyes narrow, the
# mouth corners sag (IOD) and the soft tissue moves less in a smile
# (mobility, a gain on the AU intensities) - Tanikawa et al. 2019.
AGE_EFFECTS = dict(lip_thickness=-0.4, eye_aperture=-0.3, corner_sag=0.03, mobility=-0.35)
# Rubin's (1974) smile types: a "cuspid" smile (about 31 % of people) recruits
# the upper lip raiser (AU10) with the lip-corner pull, a "commissure" smile
# barely. upper_lip_raise = AU10 / AU12 intensity, uniform in these ranges.
CUSPID_SHARE = 0.31
UPPER_LIP_RAISE = dict(cuspid=(0.5, 1.0), commissure=(0.0, 0.25))
# Stable individual differences in how strongly a person smiles (Cohn, Schmidt,
# Gross & Ekman 2002): a log-normal gain on the AU intensities, not visible in
# the neutral face.
EXPRESSIVITY_STD = 0.2
SIDE_BIAS_STD = 0.2  # person's log ratio of left to right AU12 strength
# The stronger side's mouth corner sits this much higher per unit side bias (IOD).
RESTING_CORNER_LIFT = 0.1


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(*bounds))


def sample_identity(rng: np.random.Generator) -> dict:
    """A random person: neutral shape, depth, head pose, side bias, style repertoire.

    Returns a dict with
      neutral: (68, 2) face-frame IOD units; depth: (68,) IOD units;
      pose: (3,) yaw, pitch, roll in radians;
      side_bias: log ratio of left to right lip-corner strength;
      age: in [0, 1]; expressivity: a personal gain; mobility: the gain on the
        AU intensities (age's share times expressivity);
      upper_lip_raise: AU10 recruited per unit AU12 (Rubin's smile type);
      repertoire: (len(CLASSES), len(STYLES)) the person's style probabilities per class;
      and the shape parameters drawn (relative changes or IOD offsets, see _SHAPE_RANGES).
    """
    neutral = action_units.template_unit().copy()
    params = {name: _uniform(rng, bounds) for name, bounds in _SHAPE_RANGES.items()}
    age = float(rng.uniform())
    params["lip_thickness"] += AGE_EFFECTS["lip_thickness"] * (age - 0.5)
    params["eye_aperture"] += AGE_EFFECTS["eye_aperture"] * (age - 0.5)
    jaw = list(landmarks.JAW)
    neutral[jaw, 0] *= 1.0 + params["face_width"]
    half_shift = 0.5 * params["eye_distance"]
    neutral[list(landmarks.RIGHT_EYE), 0] -= half_shift
    neutral[list(landmarks.LEFT_EYE), 0] += half_shift
    neutral[list(landmarks.RIGHT_BROW), 0] -= 0.5 * half_shift
    neutral[list(landmarks.LEFT_BROW), 0] += 0.5 * half_shift
    # Eye aperture: lids away from (or towards) the line through the eye corners.
    for eye in (landmarks.RIGHT_EYE, landmarks.LEFT_EYE):
        corners_y = 0.5 * (neutral[eye[0], 1] + neutral[eye[3], 1])
        lids = [eye[1], eye[2], eye[4], eye[5]]
        neutral[lids, 1] = corners_y + (neutral[lids, 1] - corners_y) * (1.0 + params["eye_aperture"])
    mouth = list(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    # Lip thickness: the outer lip contour away from the lip line (inner lips stay).
    lip_line_y = neutral[list(landmarks.INNER_LIPS), 1].mean()
    red_lips = [49, 50, 51, 52, 53, 55, 56, 57, 58, 59]
    neutral[red_lips, 1] = lip_line_y + (neutral[red_lips, 1] - lip_line_y) * (1.0 + params["lip_thickness"])
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

    # Structural asymmetry: the stronger side's corner rests a little higher;
    # with age both corners sag.
    side_bias = float(rng.normal(0.0, SIDE_BIAS_STD))
    lift = RESTING_CORNER_LIFT * side_bias
    for index, weight in {54: 1.0, 64: 1.0, 53: 0.5, 55: 0.5}.items():
        sag = AGE_EFFECTS["corner_sag"] * age * weight
        neutral[index, 1] += sag - 0.5 * lift * weight
        neutral[landmarks.MIRROR[index], 1] += sag + 0.5 * lift * weight

    # Small smooth per-point variation: a few random Gaussian bumps of displacement.
    centers = rng.uniform([-0.8, -0.6], [0.8, 1.4], size=(6, 2))
    vectors = rng.normal(0.0, 0.02, size=(6, 2))
    squared = ((neutral[:, None, :] - centers[None]) ** 2).sum(-1)
    neutral += np.exp(-squared / (2 * 0.35**2)) @ vectors

    pose = np.deg2rad(rng.uniform(-5.0, 5.0, size=3))
    repertoire = np.stack([
        rng.dirichlet(REPERTOIRE_CONCENTRATION * np.asarray(STYLE_PRIORS[name])) for name in CLASSES
    ])
    expressivity = float(np.exp(rng.normal(0.0, EXPRESSIVITY_STD)))
    mobility = (1.0 + AGE_EFFECTS["mobility"] * (age - 0.5)) * expressivity
    smile_type = "cuspid" if rng.random() < CUSPID_SHARE else "commissure"
    upper_lip_raise = _uniform(rng, UPPER_LIP_RAISE[smile_type])
    return dict(neutral=neutral, depth=np.array(depth_template()), pose=pose, side_bias=side_bias,
                age=age, expressivity=expressivity, mobility=mobility, upper_lip_raise=upper_lip_raise,
                repertoire=repertoire, **params)


def subject_name(subject: int) -> str:
    return f"synth_{subject:05d}"


def identity_of(seed: int, subject: int) -> dict:
    """The identity of subject number `subject` in the dataset of this seed (as generate_examples)."""
    return sample_identity(np.random.default_rng([seed, subject]))


def with_hidden_traits(identity: dict, rng: np.random.Generator | None = None) -> dict:
    """The person with the traits a neutral face does not show (expressivity,
    smile type, style repertoire) replaced: by a fresh draw from the
    population (rng), or by the population's typical values (rng=None:
    expressivity 1, the mean upper-lip raise, the class priors).

    What a generator that sees only the neutral face can know of this person.
    """
    if rng is None:
        expressivity = 1.0
        share = {"cuspid": CUSPID_SHARE, "commissure": 1.0 - CUSPID_SHARE}
        upper_lip_raise = sum(share[k] * float(np.mean(v)) for k, v in UPPER_LIP_RAISE.items())
        repertoire = np.array([STYLE_PRIORS[name] for name in CLASSES], float)
    else:
        expressivity = float(np.exp(rng.normal(0.0, EXPRESSIVITY_STD)))
        smile_type = "cuspid" if rng.random() < CUSPID_SHARE else "commissure"
        upper_lip_raise = _uniform(rng, UPPER_LIP_RAISE[smile_type])
        repertoire = np.stack([
            rng.dirichlet(REPERTOIRE_CONCENTRATION * np.asarray(STYLE_PRIORS[name])) for name in CLASSES
        ])
    return {**identity, "expressivity": expressivity, "upper_lip_raise": upper_lip_raise,
            "mobility": identity["mobility"] / identity["expressivity"] * expressivity,
            "repertoire": repertoire}


# ---------------------------------------------------------------------------
# Clips.

# Tracking noise: AR(1) over frames with this lag-1 correlation; in a share of
# frames 1-3 points are off by OUTLIER_SCALE x noise_std (0.05-0.15 IOD at 0.01).
NOISE_CORRELATION = 0.75
OUTLIER_FRAME_RATE = 0.03
OUTLIER_SCALE = (5.0, 15.0)


def clip_latents(rng: np.random.Generator, identity: dict, label: int, style: int | None = None) -> dict:
    """Every random draw of one clip of class CLASSES[label]; nothing computed from a face.

    style: index into STYLES, or None to draw it from the person's repertoire
    for the class (identity["repertoire"][label]). The other draws do not use
    the identity, so the latents can be rendered on any face (`render_clip`).
    """
    class_name = CLASSES[label]
    dynamics = _DYNAMICS[class_name]
    if style is None:
        style = rng.choice(len(STYLES), p=identity["repertoire"][label])
    latents = dict(style=int(style))
    for name in CLASS_PARAMETERS:
        mean, std = dynamics[name]
        latents[name] = float(_from_normal(name, rng.normal(mean, std)))
    other_styles = [s for s in range(len(STYLES)) if s != latents["style"]]
    latents.update(
        hold=int(rng.integers(NEUTRAL_HOLD[0], NEUTRAL_HOLD[1] + 1)),
        blend_style=int(rng.choice(other_styles)),
        blend_weight=float(rng.uniform(0.0, BLEND_MAX)),
        style_jitter=rng.normal(0.0, STYLE_JITTER, size=len(_STYLE_KEYS) - 1),  # all but one_sided
        apex_wiggle=rng.uniform([0.5, 0.5, 0.0, 0.0], [2.0, 2.0, 2 * np.pi, 2 * np.pi]),
        pose_offset=np.deg2rad(rng.uniform(-1.5, 1.5, size=3)),
        tilt=float(rng.uniform(0.0, 2.0)),  # degrees, plus the jaw drop's share
        drift=rng.uniform([0.5, 0.5, 0.0, 0.0], [2.0, 2.0, 2 * np.pi, 2 * np.pi], size=(3, 4)),
        shift=rng.uniform([0.5, 0.5, 0.0, 0.0], [2.0, 2.0, 2 * np.pi, 2 * np.pi], size=(2, 4)),
        camera_scale=float(rng.uniform(60.0, 120.0)),
        camera_position=rng.uniform([200.0, 150.0], [440.0, 330.0]),
        noise_seed=int(rng.integers(0, 2**63)),
    )
    return latents


def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3): roll @ pitch @ yaw. Positive pitch tilts the head back."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rot_yaw = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    # y down, z to the camera: a positive pitch moves the nose tip (z > 0) up.
    rot_pitch = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    rot_roll = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rot_roll @ rot_pitch @ rot_yaw


# Muscles shorten only so far: above a knee, an AU's intensity saturates
# smoothly towards a ceiling, (knee, ceiling) per AU_FIELDS entry (the eye
# closure's entry is unused: the lids cap it).
_SATURATION = np.array([(1.2, 1.8), (1.2, 1.8), (1.5, 2.3), (1.5, 2.2), (1.0, 1.5), (1.0, 2.0), (0.8, 1.2)])


def _saturate(intensities: np.ndarray) -> np.ndarray:
    knee, ceiling = _SATURATION[:, 0], _SATURATION[:, 1]
    room = ceiling - knee
    above = knee + room * np.tanh((intensities - knee) / room)
    return np.where(intensities > knee, above, intensities)


def apex_intensities(identity: dict, latents: dict) -> np.ndarray:
    """The clip's AU intensities at the apex (F,), in AU_FIELDS order."""
    mix = (1.0 - latents["blend_weight"]) * _STYLE_MATRIX[latents["style"]]
    mix = mix + latents["blend_weight"] * _STYLE_MATRIX[latents["blend_style"]]
    au12, au25, au26, au6, closure = mix[:5] * np.exp(latents["style_jitter"])
    one_sided = mix[5]
    amplitude = latents["amplitude"] * identity.get("mobility", 1.0)
    # Left/right: the person's side bias plus the clip's; a one-sided smile
    # drops the person's weaker corner.
    log_ratio = identity.get("side_bias", 0.0) + latents["asymmetry"]
    right, left = np.exp(-0.5 * log_ratio), np.exp(0.5 * log_ratio)
    if log_ratio >= 0:
        right *= 1.0 - one_sided
    else:
        left *= 1.0 - one_sided
    au10 = identity.get("upper_lip_raise", 0.0) * au12 * 0.5 * (right + left)
    # The Duchenne marker adds to the style's AU6.
    au6 = au6 + DUCHENNE_MAX * latents["duchenne"]
    values = _saturate(np.array([au12 * right, au12 * left, au6, au25, au26, 0.0, au10]) * amplitude)
    # AU6's lid rise and the eye closure together never shut the lids.
    values[2] = min(values[2], action_units.MAX_LID_CLOSURE / action_units.AU6_LID_RISE)
    values[5] = min(closure, action_units.MAX_LID_CLOSURE - action_units.AU6_LID_RISE * values[2])
    return values


def render_clip(
    identity: dict, label: int, latents: dict, num_frames: int = REFERENCE_FRAMES, noise_std: float = 0.01
) -> dict:
    """Render a clip's latents on a face.

    label: the class the latents were drawn for (recorded in params).
    noise_std: tracking noise, in IOD units (0.01 IOD = 0.26 px in a 64 crop):
    the stationary std of an AR(1) process over frames, plus outliers.
    Returns dict(landmarks float32 (T, 68, 2) noisy, clean float32 (T, 68, 2)
    noise-free, both in 64x64 aligned-crop pixels; style int; params: the
    derived true parameters, incl. intensities (T, F) in AU_FIELDS order).
    Frame 0 is neutral.
    """
    time_scale = num_frames / REFERENCE_FRAMES
    times = np.arange(num_frames, dtype=np.float64)

    # Intensity envelope: neutral hold, onset ramp, apex, offset ramp.
    hold = max(1, round(latents["hold"] * time_scale))
    onset, apex, offset = (latents[name] * time_scale for name in ("onset", "apex", "offset"))
    envelope = action_units.ramp((times - hold) / onset) - action_units.ramp((times - hold - onset - apex) / offset)
    # The apex is not a frozen plateau: a small smooth fluctuation where the smile is on.
    envelope = envelope * (1.0 + 0.04 * action_units.wiggle(latents["apex_wiggle"], times, num_frames) * envelope)
    apex_values = apex_intensities(identity, latents)
    intensities = envelope[:, None] * apex_values  # (T, F)
    neutral = identity["neutral"]
    shapes = neutral[None] + np.einsum("tf,fpc->tpc", intensities, action_units.au_basis(neutral))

    # Head: identity pose + a per-clip offset + motion during the smile. The
    # head tilts back with the jaw drop (a laugh); every smile drifts a little.
    tilt_back = np.deg2rad(latents["tilt"] + 3.5 * apex_values[action_units.AU_FIELDS.index("au26")])
    drift = np.deg2rad(0.5) * action_units.wiggle(latents["drift"], times, num_frames)  # (T, 3)
    angles = identity["pose"] + latents["pose_offset"] + drift + np.outer(envelope, [0.0, tilt_back, 0.0])
    rotations = _rotations(angles[:, 0], angles[:, 1], angles[:, 2])
    points_3d = np.concatenate([shapes, np.broadcast_to(identity["depth"][None, :, None], shapes.shape[:2] + (1,))], -1)
    rotated = np.einsum("tij,tpj->tpi", rotations, points_3d - HEAD_PIVOT) + HEAD_PIVOT
    shift = 0.01 * action_units.wiggle(latents["shift"], times, num_frames)  # (T, 2)
    projected = rotated[..., :2] + shift[:, None, :]  # orthographic

    # Camera: an arbitrary face size and position in a 640x480 frame.
    camera = projected * latents["camera_scale"] + latents["camera_position"]

    # Align every frame with the first frame's transform, then tracking noise.
    clean = landmarks.apply_affine(alignment.alignment_matrix(camera[0]), camera)
    noisy = clean + tracking_noise(np.random.default_rng(latents["noise_seed"]), num_frames, noise_std)
    params = dict(
        label=int(label), style=latents["style"], blend_style=latents["blend_style"],
        blend_weight=latents["blend_weight"], hold=hold, onset=onset, apex=apex, offset=offset,
        amplitude=latents["amplitude"], asymmetry=latents["asymmetry"], duchenne=latents["duchenne"],
        side_bias=identity.get("side_bias", 0.0), apex_intensities=apex_values,
        intensities=intensities, envelope=envelope, head_angles=angles,
    )
    return dict(landmarks=noisy.astype(np.float32), clean=clean.astype(np.float32), style=latents["style"],
                params=params)


def tracking_noise(rng: np.random.Generator, num_frames: int, noise_std: float) -> np.ndarray:
    """Tracker-like noise in crop pixels, (T, 68, 2).

    AR(1) over frames per point and coordinate (lag-1 correlation
    NOISE_CORRELATION, stationary std noise_std IOD); in OUTLIER_FRAME_RATE of
    the frames, 1-3 points are off by OUTLIER_SCALE x noise_std IOD.
    """
    shape = (num_frames, landmarks.NUM_POINTS, 2)
    if noise_std <= 0:
        return np.zeros(shape)
    sigma = noise_std * landmarks.inter_ocular_distance(alignment.mean_neutral_shape(landmarks.CROP_SIZE))
    innovations = rng.normal(0.0, sigma, size=shape)
    noise = np.empty(shape)
    noise[0] = innovations[0]
    keep, fresh = NOISE_CORRELATION, np.sqrt(1.0 - NOISE_CORRELATION**2)
    for t in range(1, num_frames):
        noise[t] = keep * noise[t - 1] + fresh * innovations[t]
    frames = np.flatnonzero(rng.random(num_frames) < OUTLIER_FRAME_RATE)
    for t in frames:
        points = rng.choice(landmarks.NUM_POINTS, size=rng.integers(1, 4), replace=False)
        angle = rng.uniform(0.0, 2 * np.pi, size=len(points))
        size = rng.uniform(*OUTLIER_SCALE, size=len(points)) * sigma
        noise[t, points] += size[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return noise


def sample_clip(
    rng: np.random.Generator,
    identity: dict,
    label: int,
    style: int | None = None,
    num_frames: int = REFERENCE_FRAMES,
    noise_std: float = 0.01,
) -> tuple[np.ndarray, int]:
    """One smile of `identity` of class CLASSES[label]: clip_latents + render_clip.

    Returns (landmarks float32 (T, 68, 2) in 64x64 aligned-crop pixels, style).
    """
    clip = render_clip(identity, label, clip_latents(rng, identity, label, style), num_frames, noise_std)
    return clip["landmarks"], clip["style"]


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
    landmarks float32 (T, 68, 2) (noisy), clean_landmarks float32 (T, 68, 2),
    label int, style int, subject str, video str. Each identity and each clip
    has its own generator seeded by (seed, subject[, label, clip]), so an
    example does not depend on what else is generated or in which order;
    disjoint subject ranges give disjoint people.
    """
    for subject in range(subject_offset, subject_offset + num_subjects):
        identity = identity_of(seed, subject)
        for label, class_name in enumerate(CLASSES):
            for clip in range(clips_per_class):
                latents = latents_of(seed, subject, label, clip, identity)
                rendered = render_clip(identity, label, latents, num_frames, noise_std)
                video = f"{subject_name(subject)}_{class_name}_{clip}"
                yield video, dict(
                    landmarks=rendered["landmarks"], clean_landmarks=rendered["clean"], label=label,
                    style=rendered["style"], subject=subject_name(subject), video=video,
                )


def latents_of(seed: int, subject: int, label: int, clip: int, identity: dict | None = None) -> dict:
    """The latents of clip number `clip` of class `label` of `subject` in the
    dataset of this seed, as generate_examples draws them (identity: the
    subject's, `identity_of(seed, subject)` if not given)."""
    identity = identity_of(seed, subject) if identity is None else identity
    return clip_latents(np.random.default_rng([seed, subject, label, clip]), identity, label)


def clip_on_face(neutral: np.ndarray, seed: int, subject: int, label: int, clip: int,
                 num_frames: int = REFERENCE_FRAMES) -> np.ndarray:
    """A clip of the dataset of this seed (`latents_of`) rendered noise-free on
    another neutral shape: what the data's law does with that smile on that face.

    neutral: (68, 2) in any similarity frame (e.g. a photo's template crop
    points). The clip's latents and the subject's other traits (pose, depth,
    mobility, expressivity, smile type, side bias) are kept; only the face's
    shape changes, and with it every AU field (`action_units.au_basis`).
    Returns (T, 68, 2) float32 in 64x64 aligned-crop pixels, as the dataset's
    clean_landmarks. Given the subject's own neutral, those to within 0.05 px:
    the shape is taken with its outer eye corners one unit apart (its face
    frame), while the head's depth and pivot keep the template's units."""
    identity = identity_of(seed, subject)
    face_shape = action_units.face_frame(np.asarray(neutral, np.float64))[0]
    latents = latents_of(seed, subject, label, clip, identity)
    return render_clip({**identity, "neutral": face_shape}, label, latents, num_frames, 0.0)["clean"]


def face_sensitivity(num_identities: int = 48, num_clips: int = 24, seed: int = 0,
                     num_frames: int = REFERENCE_FRAMES, hidden_traits: bool = True) -> float:
    """How much the face changes a clip: fixed latents rendered on many identities.

    For each of num_clips clip latents (drawn on one person, half per class),
    renders them noise-free on num_identities people; the displacement from
    frame 0 in IOD of frame 0, D (I, T, 68, 2). Returns the mean over clips,
    frames and points of the std across identities (RMS over x, y) divided by
    the mean |D|. hidden_traits=False gives everyone the same side bias (0),
    expressivity (1) and smile type (the mean upper_lip_raise): what the
    neutral shape (incl. its age) explains.
    """
    identities = [identity_of(seed + 1, i) for i in range(num_identities)]
    if not hidden_traits:
        mean_raise = np.mean([identity["upper_lip_raise"] for identity in identities])
        identities = [
            {**identity, "side_bias": 0.0, "expressivity": 1.0, "upper_lip_raise": mean_raise,
             "mobility": identity["mobility"] / identity["expressivity"]}
            for identity in identities
        ]
    spreads, sizes = [], []
    for clip in range(num_clips):
        rng = np.random.default_rng([seed, clip])
        label = clip % len(CLASSES)
        latents = clip_latents(rng, identity_of(seed + 2, clip), label)
        clean = np.stack([render_clip(identity, label, latents, num_frames, 0.0)["clean"] for identity in identities])
        iod = landmarks.inter_ocular_distance(clean[:, 0])[:, None, None, None]
        moves = (clean - clean[:, :1]) / iod
        spreads.append(np.sqrt(moves.var(0).sum(-1)).mean())
        sizes.append(np.linalg.norm(moves, axis=-1).mean())
    return float(np.mean(spreads) / np.mean(sizes))
