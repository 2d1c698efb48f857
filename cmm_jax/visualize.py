"""The one drawing module: landmark sketches, grids, side-by-side animations.

Images are uint8 RGB (H, W, 3); landmarks are (68, 2) pixel coordinates of a
`size` x `size` crop, drawn `scale` times larger so thin features stay legible.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from skimage import draw, transform

from cmm_jax import landmarks

BLACK = (20, 20, 20)
SEPARATOR_GRAY = (190, 190, 190)
LABEL_WIDTH = 96  # pixels of the label column in `sequence_grid`


def _blank(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear upscale of uint8 (H, W, 3) by an integer factor."""
    if scale == 1:
        return np.array(image, np.uint8)
    height, width = image.shape[:2]
    big = transform.resize(
        image, (height * scale, width * scale), order=1, preserve_range=True, anti_aliasing=False
    )
    return np.clip(np.round(big), 0, 255).astype(np.uint8)


def _blend(canvas: np.ndarray, rows, cols, alpha, color) -> None:
    """Alpha-blend `color` into canvas (float, in place) at the given pixels."""
    height, width = canvas.shape[:2]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    rows, cols, alpha = rows[inside], cols[inside], np.asarray(alpha, np.float64)[inside]
    color = np.asarray(color, np.float64)
    # Where segments overlap (joints, dots), the strongest coverage wins, so
    # joints do not come out darker than lines.
    strength = np.zeros((height, width))
    np.maximum.at(strength, (rows, cols), alpha)
    touched = strength > 0
    canvas[touched] = canvas[touched] * (1 - strength[touched, None]) + color * strength[touched, None]


def _disks(points_px: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of `skimage.draw.disk` around every point at once, the same
    arithmetic (each disk's box from ceil/floor of centre -+ radius, the test
    (offset - shifted centre) / radius, squared and summed, < 1), without a call
    per point. points_px: (N, 2) (x, y) -> rows, cols."""
    centres = np.asarray(points_px, np.float64)[:, ::-1]  # (row, col)
    upper = np.ceil(centres - radius).astype(int)
    extent = np.floor(centres + radius).astype(int) - upper  # each box's last offset
    offsets = np.arange(int(extent.max()) + 1, dtype=np.float64)
    shifted = centres - upper
    dr = ((offsets - shifted[:, :1]) / radius) ** 2  # (N, span)
    dc = ((offsets - shifted[:, 1:]) / radius) ** 2
    inside = (dr[:, :, None] + dc[:, None, :] < 1) & (offsets[:, None] <= extent[:, None, None, 0]) \
        & (offsets[None, :] <= extent[:, None, None, 1])
    point, row, col = np.nonzero(inside)
    return upper[point, 0] + row, upper[point, 1] + col


def _draw_on(canvas: np.ndarray, points_px: np.ndarray, color, dot_radius: float) -> None:
    """Draw a 68-point sketch on a float canvas in place. points_px: (68, 2) canvas pixels."""
    rows_all, cols_all, alpha_all = [], [], []
    for indices, closed in landmarks.CONTOURS:
        polyline = points_px[list(indices) + ([indices[0]] if closed else [])]
        for (x0, y0), (x1, y1) in zip(polyline[:-1], polyline[1:]):
            rr, cc, val = draw.line_aa(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
            rows_all.append(rr)
            cols_all.append(cc)
            alpha_all.append(val)
    rr, cc = _disks(points_px, dot_radius)
    rows_all.append(rr)
    cols_all.append(cc)
    alpha_all.append(np.ones(len(rr)))
    _blend(canvas, np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(alpha_all), color)


def draw_landmarks(
    points: np.ndarray,
    size: int = landmarks.CROP_SIZE,
    scale: int = 2,
    image: np.ndarray | None = None,
    color=BLACK,
) -> np.ndarray:
    """Face sketch uint8 (size*scale, size*scale, 3) of points (68, 2) in a `size` crop.

    Anti-aliased polylines along landmarks.CONTOURS plus small dots, on white,
    or on `image`: uint8 (size, size, 3) (upscaled) or (size*scale, size*scale, 3)
    (used as is, e.g. to overlay several faces in different colours).
    """
    side = size * scale
    if image is None:
        canvas = _blank(side, side)
    elif image.shape[:2] == (side, side):
        canvas = image
    elif image.shape[:2] == (size, size):
        canvas = _upscale(image, scale)
    else:
        raise ValueError(f"image must be {size} or {side} pixels square, got {image.shape}")
    canvas = canvas[..., :3].astype(np.float64)
    # Pixel centres: crop pixel (x, y) covers canvas [x*scale, (x+1)*scale).
    points_px = (np.asarray(points, np.float64) + 0.5) * scale - 0.5
    _draw_on(canvas, points_px, color, dot_radius=max(0.6, 0.5 * scale))
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def _text_image(text: str, height: int, width: int) -> np.ndarray:
    """Left-aligned black text on white, uint8 (height, width, 3) (Pillow's bitmap font)."""
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(picture)
    lines = text.split("\n")
    line_height = 12
    top = max(0, (height - line_height * len(lines)) // 2)
    for i, line in enumerate(lines):
        pen.text((4, top + i * line_height), line, fill=BLACK)
    return np.asarray(picture, np.uint8)


def frame_indices(num_frames: int, num_columns: int) -> np.ndarray:
    """num_columns evenly spaced frame indices in [0, num_frames), first and last included."""
    return np.unique(np.round(np.linspace(0, num_frames - 1, min(num_columns, num_frames))).astype(int))


def _grid(num_rows: int, columns, cell: int, row_labels, render) -> np.ndarray:
    """Rows of square cells, render(row, column_index) -> uint8 (cell, cell, 3),
    an optional label column on the left, 1-pixel gray separators."""
    label_width = LABEL_WIDTH if row_labels is not None else 0
    height = num_rows * cell + (num_rows - 1)
    width = label_width + len(columns) * cell + (len(columns) - 1)
    grid = np.full((height, width, 3), SEPARATOR_GRAY, np.uint8)
    for r in range(num_rows):
        top = r * (cell + 1)
        if row_labels is not None:
            grid[top : top + cell, :label_width] = _text_image(str(row_labels[r]), cell, label_width)
        for c, t in enumerate(columns):
            left = label_width + c * (cell + 1)
            grid[top : top + cell, left : left + cell] = render(r, t)
    return grid


def sequence_grid(
    sequences: np.ndarray,
    num_columns: int = 8,
    size: int = landmarks.CROP_SIZE,
    scale: int = 2,
    row_labels=None,
) -> np.ndarray:
    """Grid image uint8: one row per sequence, evenly spaced frames as columns.

    sequences: (R, T, 68, 2) crop pixel coordinates. row_labels: None or R
    strings ("\\n" splits lines), drawn in a column on the left.
    Separators are 1-pixel gray lines.
    """
    sequences = np.asarray(sequences)
    columns = frame_indices(sequences.shape[1], num_columns)
    return _grid(
        len(sequences), columns, size * scale, row_labels,
        lambda r, t: draw_landmarks(sequences[r, t], size, scale),
    )


def video_grid(videos: np.ndarray, num_columns: int = 8, scale: int = 1, row_labels=None,
               cell: int | None = None) -> np.ndarray:
    """Grid image uint8 of frames: one row per video, evenly spaced frames as columns.

    videos: uint8 (R, T, S, S, 3); scale: integer pixel upscaling of each
    frame; cell: instead, about this many pixels a cell side (S scaled up, or
    down by averaging blocks, by an integer factor).
    """
    videos = np.asarray(videos, np.uint8)
    columns = frame_indices(videos.shape[1], num_columns)
    size = videos.shape[2]
    if cell is not None and size > cell:
        factor = size // cell
        size //= factor
        chosen = videos[:, columns, : size * factor, : size * factor]
        total = np.zeros(chosen.shape[:2] + (size, size, 3), np.uint32)
        for dy in range(factor):  # block sums by strided slices: 8x faster than a mean over reshaped axes
            for dx in range(factor):
                total += chosen[:, :, dy::factor, dx::factor]
        shrunk = ((total + factor * factor // 2) // (factor * factor)).astype(np.uint8)  # block means, halves up
        return _grid(len(videos), range(len(columns)), size, row_labels, lambda r, c: shrunk[r, c])
    if cell is not None:
        scale = max(1, cell // size)
    return _grid(len(videos), columns, size * scale, row_labels, lambda r, t: _upscale(videos[r, t], scale))


def side_by_side_frames(sequences: np.ndarray, size: int = landmarks.CROP_SIZE, scale: int = 2) -> np.ndarray:
    """Animation frames uint8 (T, size*scale, K*size*scale, 3) of K sequences side by side.

    sequences: (K, T, 68, 2). A 1-pixel gray line ends each panel but the last.
    """
    sequences = np.asarray(sequences)
    num_sequences, num_frames = sequences.shape[:2]
    cell = size * scale
    frames = np.empty((num_frames, cell, num_sequences * cell, 3), np.uint8)
    for t in range(num_frames):
        for k in range(num_sequences):
            frames[t, :, k * cell : (k + 1) * cell] = draw_landmarks(sequences[k, t], size, scale)
        for k in range(1, num_sequences):
            frames[t, :, k * cell - 1] = SEPARATOR_GRAY
    return frames
