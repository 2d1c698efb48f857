"""Is a photo's face like the neutral faces the models were trained on?

The landmark models expect a NEUTRAL face: given a smiling one they add a smile
to the smile, and nothing downstream notices. At the end of training,
`neutral_range` measures the training split's neutral first frames and
`run_dir.write_input_range` stores it as DIR/input_range.json; when sampling,
`check_input` measures the photo's face the same way and names each measure
that falls outside that range. Three measures, all in units of the
inter-ocular distance (IOD, outer eye corners 36-45), so that they do not
depend on the crop's scale:

- mouth width (lip corners 48-54) / IOD: a smile widens the mouth (about 0.65
  on neutral faces; scikit-image's astronaut, who smiles, measures 0.73);
- lip corner lift: how far the midpoint of the lip corners lies above the
  centre of the inner lips (62-66), perpendicular to the eye line, / IOD. A
  smile pulls the corners up: about 0 on a neutral mouth, 0.11 on the
  astronaut. On `smile_synth` this is the measure that tells a smiling photo,
  because its identities' mouth widths and eye distances vary by several per
  cent each, so their width ratios reach the astronaut's;
- the landmark VAE's reconstruction error of the face (posterior mean decoded,
  mean point distance / IOD), high side only: a face shape or pose the VAE has
  not learnt to represent reconstructs badly.

The range of a measure is the QUANTILES of the training faces. dlib's points on
one photo scatter more than a synthetic dataset's landmarks: on the astronaut
and on a near-neutral portrait (tests/data/grace_hopper.jpg), each rescaled to
five sizes, dlib's mouth width moved by up to +-0.07 IOD and its lip corner
lift by +-0.02, comparable to the whole spread of smile_synth's neutral faces
(corner lift -0.03 to +0.02 on the tiny run). So a photo is flagged only when
it lies beyond the range by more than MARGIN times the range's width: on the
tiny smile_synth run, lip corners above +0.05 (the astronaut: +0.10 to +0.13
over those sizes; the portrait: +0.00 to +0.04). On smile_synth, whose faces
are all reshaped copies of one template, a well-trained VAE may call a real
face's shape unusual: that is true of such a run.

A face whose shape the VAE reconstructs worse than the training faces is one
the later models have not learnt either: their smile for it is extrapolated,
and on real faces out of smile_synth's range it came out damped (on one
photo to a fifth of the data's mouth opening; BUILD.md "Results: two more
faces, and the smile generated within the training range"). `share_in_range`
finds the nearest shape on the line from the template to the face that is
within the range, and sampling generates the smile for that shape and moves
the face's own points by it.

Runs trained before this file existed have no input_range.json;
`run_dir.read_input_range` returns None for them and sampling skips the check.
"""

from __future__ import annotations

import numpy as np

from cmm_jax import landmarks

# The training range of a measure: these quantiles of the training faces.
QUANTILES = (0.005, 0.995)
# A photo is flagged beyond the range widened by this share of its width on each side.
MARGIN = 0.5
MEASURES = ("mouth_ratio", "corner_lift", "reconstruction_error")
# `share_in_range` tries the shapes 0, 1/SHARE_STEPS, ..., 1 of the way from the centre to the face.
SHARE_STEPS = 20


def corner_lift(points) -> np.ndarray:
    """Height of the lip corners (48, 54) above the inner-lip centre (62, 66),
    perpendicular to the eye line, over the inter-ocular distance. (..., 68, 2) -> (...).

    Image coordinates (y down): positive when the corners are higher (a smile).
    """
    points = np.asarray(points, np.float64)
    eyes = points[..., landmarks.LEFT_EYE_OUTER, :] - points[..., landmarks.RIGHT_EYE_OUTER, :]
    distance = np.linalg.norm(eyes, axis=-1)
    down = np.stack([-eyes[..., 1], eyes[..., 0]], axis=-1) / distance[..., None]  # eye line turned 90 degrees
    centre = 0.5 * (points[..., 62, :] + points[..., 66, :])
    corners = 0.5 * (points[..., landmarks.MOUTH_RIGHT, :] + points[..., landmarks.MOUTH_LEFT, :])
    return ((centre - corners) * down).sum(-1) / distance


def reconstruction_error(vae, points) -> np.ndarray:
    """The VAE's error on each shape, in IOD. points (N, 68, 2) in [-1, 1] -> (N,).

    The posterior mean is decoded (no sampling), so the error is deterministic.
    """
    points = np.asarray(points, np.float32)
    mean, _ = vae.encode(points)
    decoded = np.asarray(vae.decode(mean), np.float64)
    target = points.astype(np.float64)
    return landmarks.point_error(decoded, target).mean(-1) / landmarks.inter_ocular_distance(target)


def measure(vae, points) -> dict[str, np.ndarray]:
    """Every measure of shapes (N, 68, 2) in [-1, 1]: name -> (N,)."""
    return {
        "mouth_ratio": landmarks.mouth_width_ratio(points),
        "corner_lift": corner_lift(points),
        "reconstruction_error": reconstruction_error(vae, points),
    }


def _distribution(values: np.ndarray) -> dict:
    low, high = np.quantile(values, QUANTILES)
    return {"low": float(low), "high": float(high), "min": float(values.min()), "max": float(values.max()),
            "median": float(np.median(values))}


def neutral_range(vae, train_neutral) -> dict:
    """The training faces' range of each measure.

    train_neutral: (N, 68, 2) neutral first frames of the training split in the
    models' [-1, 1] coordinates (`pipeline.load_split(...)["landmarks"][:, 0]`).
    Returns {"count", "quantiles", "margin", and per measure {"low", "high",
    "min", "max", "median"}} (low/high: the QUANTILES).
    """
    train_neutral = np.asarray(train_neutral, np.float32)
    if train_neutral.ndim != 3 or train_neutral.shape[1:] != (landmarks.NUM_POINTS, 2) or not len(train_neutral):
        raise ValueError(f"expected (N, 68, 2) neutral shapes, got {train_neutral.shape}")
    stats = {"count": int(len(train_neutral)), "quantiles": list(QUANTILES), "margin": MARGIN}
    for name, values in measure(vae, train_neutral).items():
        stats[name] = _distribution(values)
    return stats


def _limits(entry: dict, margin: float) -> tuple[float, float]:
    width = entry["high"] - entry["low"]
    return entry["low"] - margin * width, entry["high"] + margin * width


def share_in_range(vae, neutral, centre, stats: dict, steps: int = SHARE_STEPS) -> float:
    """How far a face may be taken from `centre` towards `neutral` and stay
    within the training range of the VAE's reconstruction error (the limit
    beyond which `check_input` calls a shape unusual): 1 when `neutral` itself
    is within it, else the largest of 0, 1/steps, 2/steps, ... that is (0: the
    centre itself). neutral, centre: (68, 2) in the models' [-1, 1] coordinates."""
    neutral, centre = np.asarray(neutral, np.float32), np.asarray(centre, np.float32)
    shares = np.arange(steps + 1) / steps
    errors = reconstruction_error(vae, centre + shares[:, None, None].astype(np.float32) * (neutral - centre))
    _, high = _limits(stats["reconstruction_error"], stats.get("margin", MARGIN))
    within = np.nonzero(errors <= high)[0]
    return float(shares[within.max()]) if len(within) else 0.0


def check_input(vae, neutral, stats: dict) -> list[str]:
    """One line per measure of a face beyond the training range; [] when none is.

    neutral: (68, 2) the face's points in the models' [-1, 1] coordinates (its
    aligned 64-pixel crop, normalised). stats: `neutral_range`'s dict.
    """
    values = {name: float(v[0]) for name, v in measure(vae, np.asarray(neutral, np.float32)[None]).items()}
    margin = stats.get("margin", MARGIN)
    not_neutral = "the face may not be neutral (the model adds a smile to it)"
    problems = []

    entry = stats["mouth_ratio"]
    low, high = _limits(entry, margin)
    value, training = values["mouth_ratio"], f"the training range {entry['low']:.2f} to {entry['high']:.2f}"
    if value > high:
        problems.append(f"mouth width {value:.2f} inter-ocular distances, above {training}: {not_neutral}")
    elif value < low:
        problems.append(f"mouth width {value:.2f} inter-ocular distances, below {training}: "
                        f"pursed lips or a turned head?")

    entry = stats["corner_lift"]
    low, high = _limits(entry, margin)
    value, training = values["corner_lift"], f"the training range {entry['low']:+.2f} to {entry['high']:+.2f}"
    if value > high:
        problems.append(f"lip corners {value:+.2f} inter-ocular distances above the lip centre, above {training}: "
                        f"{not_neutral}")
    elif value < low:
        problems.append(f"lip corners {value:+.2f} inter-ocular distances above the lip centre, below {training}: "
                        f"the face may not be neutral (turned-down mouth)")

    entry = stats["reconstruction_error"]
    _, high = _limits(entry, margin)
    value = values["reconstruction_error"]
    if value > high:
        quantile = f"{100 * stats.get('quantiles', QUANTILES)[1]:g} %"
        problems.append(f"VAE reconstruction error {value:.3f} IOD, above the training range's {quantile} "
                        f"({entry['high']:.3f}): an unusual face shape or pose")
    return problems
