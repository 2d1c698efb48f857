"""Drawing landmarks, grids and animations; writing PNG, GIF and MP4; reading photos."""

import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from cmm_jax import alignment, files, visualize


@pytest.fixture(scope="module")
def sequences():
    """(3, 10, 68, 2): the template, moving a little."""
    template = alignment.mean_neutral_shape()
    offsets = np.linspace(0, 3, 10)[None, :, None, None] * np.array([1.0, 0.5]) * np.arange(1, 4)[:, None, None, None]
    return (template + offsets).astype(np.float32)


def test_draw_landmarks_marks_the_points(sequences):
    points = sequences[0, 0]
    image = visualize.draw_landmarks(points, size=64, scale=3)
    assert image.shape == (192, 192, 3) and image.dtype == np.uint8
    ink = image.min(-1) < 128
    assert 0.02 < ink.mean() < 0.3  # lines, not an empty or a filled canvas
    for x, y in points:
        row, col = int((y + 0.5) * 3), int((x + 0.5) * 3)
        assert ink[row - 1 : row + 2, col - 1 : col + 2].any()
    # On an image: small images are upscaled, scaled-size ones are drawn on as is.
    photo = np.zeros((64, 64, 3), np.uint8)
    on_photo = visualize.draw_landmarks(points, image=photo, color=(255, 0, 0))
    assert on_photo.shape == (128, 128, 3) and (on_photo[..., 0] > 200).any() and not on_photo[..., 1].any()
    twice = visualize.draw_landmarks(points + 5, image=on_photo, color=(0, 255, 0))
    assert (twice[..., 0] > 200).any() and (twice[..., 1] > 200).any()
    with pytest.raises(ValueError):
        visualize.draw_landmarks(points, image=np.zeros((50, 50, 3), np.uint8))


def test_frame_indices_include_first_and_last():
    np.testing.assert_array_equal(visualize.frame_indices(32, 8), [0, 4, 9, 13, 18, 22, 27, 31])
    np.testing.assert_array_equal(visualize.frame_indices(5, 8), [0, 1, 2, 3, 4])


def test_sequence_grid_layout(sequences):
    grid = visualize.sequence_grid(sequences, num_columns=4, scale=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 128 + 2, 4 * 128 + 3, 3)
    labelled = visualize.sequence_grid(sequences, num_columns=4, scale=2, row_labels=["a", "b\nc", "d"])
    assert labelled.shape == (3 * 128 + 2, visualize.LABEL_WIDTH + 4 * 128 + 3, 3)
    assert (labelled[:128, : visualize.LABEL_WIDTH].min(-1) < 128).any()  # the label is drawn


def test_video_grid_cells_are_about_the_asked_size():
    videos = np.random.default_rng(0).integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    small = visualize.video_grid(videos, num_columns=3, cell=4)  # 8-px frames shrunk by 2, block means
    assert small.shape == (2 * 4 + 1, 3 * 4 + 2, 3)
    block = videos[1, 4, 4:6, 2:4].reshape(4, 3).astype(int).sum(0)
    np.testing.assert_array_equal(small[5 + 2, 2 * 5 + 1], (block + 2) // 4)
    large = visualize.video_grid(videos, num_columns=3, cell=16)  # grown by 2, as scale=2
    np.testing.assert_array_equal(large, visualize.video_grid(videos, num_columns=3, scale=2))


def test_side_by_side_frames(sequences):
    frames = visualize.side_by_side_frames(sequences, scale=2)
    assert frames.shape == (10, 128, 3 * 128, 3) and frames.dtype == np.uint8
    # Panel k of frame t is sequence k at time t; a gray line ends each panel but the last.
    np.testing.assert_array_equal(frames[4, :, 128:255], visualize.draw_landmarks(sequences[1, 4])[:, :127])
    assert (frames[:, :, 127] == visualize.SEPARATOR_GRAY).all()
    assert not np.array_equal(frames[0], frames[-1])


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_write_video_reads_back(tmp_path, sequences, suffix):
    frames = visualize.side_by_side_frames(sequences, scale=1)  # (10, 64, 192, 3)
    frames = frames[:, :63]  # odd height: MP4 pads it
    path = tmp_path / f"clip{suffix}"
    files.write_video(path, frames, fps=8)
    # Pillow reads GIFs, PyAV mp4s (inside the process: imageio's ffmpeg plugin would fork this JAX process).
    back = iio.imread(path, index=None, plugin="pillow" if suffix == ".gif" else "pyav")
    assert back.shape[0] == len(frames)
    assert back.shape[1:3] == ((63, 192) if suffix == ".gif" else (64, 192))
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    # Close to the frames (one palette for the GIF; H.264 for the MP4), in order.
    error = np.abs(back[:, :63, :, :3].astype(float) - frames).mean(axis=(1, 2, 3))
    assert error.max() < 4.0, error


def test_failed_writes_say_why_and_leave_nothing(tmp_path):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    target = tmp_path / "full" / "clip.mp4"
    target.parent.mkdir()
    target.parent.chmod(0o500)  # a folder that cannot take the file (as on a full disk)
    try:
        if os.access(target.parent, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(OSError):
            files.write_video(target, frames, fps=8)
    finally:
        target.parent.chmod(0o700)
    assert os.listdir(target.parent) == []
    # ffmpeg itself failing (here: a size it cannot encode) is an OSError naming the file.
    with pytest.raises(OSError, match="clip.mp4"):
        files.write_mp4(str(tmp_path / "clip.mp4"), np.zeros((2, 2, 2000000, 3), np.uint8), fps=8)


FILLED_DISK = """
import os, resource, signal, sys
import numpy as np
from cmm_jax import files

folder = sys.argv[1]
frames = np.random.default_rng(0).integers(0, 256, (32, 128, 128, 3), np.uint8)
writers = {
    "clip.mp4": lambda path, frames: files.write_video(path, frames),
    "clip.gif": lambda path, frames: files.write_video(path, frames),
    "samples.npz": lambda path, frames: files.write_npz(path, frames=frames),
    "grid.png": lambda path, frames: files.write_png(path, frames.reshape(-1, 128, 3)),
}
for name, write in writers.items():
    write(os.path.join(folder, name), frames[:1])
# Files may now grow to 100 kB, then writing fails with EFBIG (SIGXFSZ ignored), as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
for name, write in writers.items():
    try:
        write(os.path.join(folder, name), frames)
        print(name, "written")
    except OSError as e:
        print(name, "OSError", e.strerror)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX file-size limits")
def test_writes_that_fill_the_disk_fail_and_keep_the_old_files(tmp_path):
    """Each writer, stopped mid-file by a full disk (a file-size limit in a
    child process), raises OSError and leaves the file it replaces as it was."""
    code = subprocess.run([sys.executable, "-c", FILLED_DISK, str(tmp_path)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert code.returncode == 0, code.stderr
    assert code.stdout.split("\n")[:4] == [f"{name} OSError File too large" for name in
                                           ("clip.mp4", "clip.gif", "samples.npz", "grid.png")], code.stdout
    assert sorted(os.listdir(tmp_path)) == ["clip.gif", "clip.mp4", "grid.png", "samples.npz"]  # no temporary left
    assert iio.imread(tmp_path / "clip.mp4", index=None, plugin="pyav").shape == (1, 128, 128, 3)
    assert iio.imread(tmp_path / "clip.gif", index=None, plugin="pillow").shape[:3] == (1, 128, 128)
    assert np.load(tmp_path / "samples.npz")["frames"].shape == (1, 128, 128, 3)
    assert iio.imread(tmp_path / "grid.png").shape == (128, 128, 3)


def test_write_png_and_bad_suffix(tmp_path):
    image = visualize.draw_landmarks(alignment.mean_neutral_shape())
    files.write_png(tmp_path / "sub" / "face.png", image)
    np.testing.assert_array_equal(iio.imread(tmp_path / "sub" / "face.png"), image)
    with pytest.raises(ValueError):
        files.write_video(tmp_path / "clip.avi", np.zeros((2, 8, 8, 3), np.uint8))
    assert not os.path.exists(tmp_path / "clip.avi")


def test_read_photo_as_a_camera_wrote_it(tmp_path):
    """A phone's portrait photo (pixels stored sideways, EXIF orientation 6)
    comes back upright; HEIC (iPhones' format) is read; CMYK becomes RGB; an
    opaque alpha channel is dropped, a transparent one refused in one line."""
    photo = files.astronaut()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.ascontiguousarray(np.rot90(photo))).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    opaque = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], -1)
    iio.imwrite(tmp_path / "opaque.png", opaque)
    opaque[:10, :10, 3] = 0
    iio.imwrite(tmp_path / "cut_out.png", opaque)
    Image.fromarray(photo).save(tmp_path / "iphone.heic", quality=90)
    for name, tolerance in (("phone.jpg", 4), ("print.jpg", 4), ("opaque.png", 0), ("iphone.heic", 4)):
        image = files.read_photo(str(tmp_path / name))
        assert image.shape == photo.shape and image.dtype == np.uint8, name
        assert np.abs(image.astype(int) - photo).mean() <= tolerance, name
    with pytest.raises(files.UserError, match="transparent pixels"):
        files.read_photo(str(tmp_path / "cut_out.png"))
