"""Figures that show what smile_synth generates.

    python -m datasets.smile_synth.figures --out=DIR

writes
  DIR/neutral_overlay.png     neutral frames of several synthetic people, mapped
                              back onto the photo the template came from;
  DIR/sequences_<class>.png   per class, a row per style and person, evenly
                              spaced frames from neutral to the end of the clip;
  DIR/styles.gif              the five styles side by side (posed, one person);
  DIR/apex_geometry.json      per class, how the face moves from frame 0 to the
                              apex (widest mouth) of noise-free clips
                              (`apex_geometry`; BUILD.md "Checked against FACS").
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from cmm_jax import alignment, face, files, landmarks, visualize
from cmm_jax.data import synth

OVERLAY_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
OVERLAY_WIDTH = 640  # pixels


def neutral_overlay(seed: int, num_identities: int = len(OVERLAY_COLORS)) -> np.ndarray:
    """Synthetic neutral faces drawn over the astronaut photo, uint8 (S, S, 3)."""
    photo = files.astronaut()
    crop_to_photo = landmarks.invert_affine(alignment.alignment_matrix(face.detect_landmarks(photo)))
    # The square of the photo that the aligned crop covers.
    crop_corners = np.array([[0, 0], [landmarks.CROP_SIZE, 0], [0, landmarks.CROP_SIZE], [landmarks.CROP_SIZE] * 2])
    corners = landmarks.apply_affine(crop_to_photo, crop_corners)
    side = int(np.ceil((corners.max(0) - corners.min(0)).max()))
    left, top = np.clip(np.round(corners.mean(0) - side / 2).astype(int), 0, np.array(photo.shape[1::-1]) - side)
    region = photo[top : top + side, left : left + side]
    scale = max(1, OVERLAY_WIDTH // side)

    canvas = None
    for i in range(num_identities):
        identity = synth.sample_identity(np.random.default_rng([seed, i]))
        clip, _ = synth.sample_clip(np.random.default_rng([seed, i, 0]), identity, 0, noise_std=0.0)
        points = landmarks.apply_affine(crop_to_photo, clip[0]) - (left, top)
        canvas = visualize.draw_landmarks(
            points, size=side, scale=scale, image=region if canvas is None else canvas,
            color=OVERLAY_COLORS[i % len(OVERLAY_COLORS)],
        )
    return canvas


def class_sequences(seed: int, label: int, num_identities: int = 2, num_frames: int = 32) -> tuple[np.ndarray, list[str]]:
    """Clips (len(STYLES) * num_identities, T, 68, 2) of one class and their row labels."""
    clips, labels = [], []
    for style, style_name in enumerate(synth.STYLES):
        for i in range(num_identities):
            identity = synth.sample_identity(np.random.default_rng([seed, i]))
            clip, _ = synth.sample_clip(
                np.random.default_rng([seed, i, label, style]), identity, label, style, num_frames=num_frames
            )
            clips.append(clip)
            labels.append(f"{style_name}\n{synth.subject_name(i)}")
    return np.stack(clips), labels


def style_animation(seed: int, label: int = 0, num_frames: int = 32) -> np.ndarray:
    """Frames uint8 (T, H, 5 * W, 3): the five styles of one person side by side."""
    identity = synth.sample_identity(np.random.default_rng([seed, 0]))
    clips = [
        synth.sample_clip(np.random.default_rng([seed, 0, label, style]), identity, label, style, num_frames=num_frames)[0]
        for style in range(len(synth.STYLES))
    ]
    return visualize.side_by_side_frames(np.stack(clips))


def apex_geometry(seed: int, label: int, num_people: int = 200, num_frames: int = 32) -> dict[str, float]:
    """Mean apex motion of noise-free clips of one class, one per person, in
    inter-ocular distances (outer eye corners): mouth width ratio; lip-corner
    motion outwards and upwards and its angle above the horizontal (degrees);
    inner-lip gap (62-66) at frame 0 and at the apex; rise of the lower lids
    (41, 46), of the cheek contour (2, 14) and of the nose wings (31, 35)."""
    clips = np.stack([
        synth.sample_clip(np.random.default_rng([seed, 3, label, i]), synth.sample_identity(np.random.default_rng([seed, 3, i])),
                          label, num_frames=num_frames, noise_std=0.0)[0]
        for i in range(num_people)
    ]).astype(np.float64)
    iod = landmarks.inter_ocular_distance(clips[:, 0])
    width = np.linalg.norm(clips[:, :, landmarks.MOUTH_LEFT] - clips[:, :, landmarks.MOUTH_RIGHT], axis=-1)
    apex = clips[np.arange(len(clips)), width.argmax(1)]
    move = (apex - clips[:, 0]) / iod[:, None, None]  # image axes: x right, y down
    out = 0.5 * (move[:, landmarks.MOUTH_LEFT, 0] - move[:, landmarks.MOUTH_RIGHT, 0])
    up = -0.5 * (move[:, landmarks.MOUTH_LEFT, 1] + move[:, landmarks.MOUTH_RIGHT, 1])

    def rise(a, b):
        return float(-0.5 * (move[:, a, 1] + move[:, b, 1]).mean())

    def gap(frames):
        return float((np.linalg.norm(frames[:, 66] - frames[:, 62], axis=-1) / iod).mean())

    return {
        "mouth_width_ratio": float((width.max(1) / width[:, 0]).mean()),
        "corner_out": float(out.mean()), "corner_up": float(up.mean()),
        "corner_angle_degrees": float(np.degrees(np.arctan2(up, out)).mean()),
        "inner_lip_gap_neutral": gap(clips[:, 0]), "inner_lip_gap_apex": gap(apex),
        "lower_lid_rise": rise(41, 46), "cheek_contour_rise": rise(2, 14), "nose_wing_rise": rise(31, 35),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    files.write_png(os.path.join(args.out, "neutral_overlay.png"), neutral_overlay(args.seed))
    for label, class_name in enumerate(synth.CLASSES):
        clips, row_labels = class_sequences(args.seed, label)
        files.write_png(
            os.path.join(args.out, f"sequences_{class_name}.png"),
            visualize.sequence_grid(clips, num_columns=8, row_labels=row_labels),
        )
    files.write_video(os.path.join(args.out, "styles.gif"), style_animation(args.seed), fps=8)
    geometry = {name: apex_geometry(args.seed, label) for label, name in enumerate(synth.CLASSES)}
    files.write_json(os.path.join(args.out, "apex_geometry.json"), geometry)
    print(json.dumps(geometry, indent=2))
    print(f"wrote figures to {args.out}")


if __name__ == "__main__":
    main()
