"""Sample grids and animations of the K modes, written to a run's samples/."""

from __future__ import annotations

import os

from cmm_jax import files, inference, landmarks, visualize


def write_samples(models, test, info, config, out_dir: str) -> list[str]:
    """For a few test inputs and every class: a PNG grid (one row per mode,
    columns are frames) and a GIF and an MP4 with the K modes side by side.
    Returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    count = min(config.eval.num_sample_inputs, len(test["landmarks"]))
    neutral = test["landmarks"][:count, 0]
    generated = inference.generate_for_inputs(models, neutral, info.num_classes, info.num_frames, config)
    pixels = landmarks.denormalize(generated)  # (N, C, K, T, 68, 2)
    written = []
    for i in range(count):
        for c, class_name in enumerate(info.class_names):
            stem = os.path.join(out_dir, f"input{i}_{class_name}")
            modes = pixels[i, c]
            row_labels = [f"mode {k}" for k in range(len(modes))]
            files.write_png(stem + ".png", visualize.sequence_grid(modes, row_labels=row_labels))
            frames = visualize.side_by_side_frames(modes)
            for suffix in (".gif", ".mp4"):
                files.write_video(stem + suffix, frames, fps=config.eval.fps)
            written += [stem + s for s in (".png", ".gif", ".mp4")]
    return written
