"""The smile_synth TFDS builder: array_record files read back without TensorFlow."""

import os

import numpy as np
import pytest

from cmm_jax.data import prepare, synth
from datasets.smile_synth import smile_synth_dataset_builder as smile_synth

TINY = dict(num_train_subjects=12, num_validation_subjects=4, num_test_subjects=6, clips_per_class=2, num_frames=16)


def test_config_names():
    assert smile_synth.make_config() is smile_synth.Builder.builder_configs["default"]
    assert smile_synth.make_config(**TINY) is smile_synth.Builder.builder_configs["tiny"]
    default = smile_synth.make_config()
    assert (default.num_train_subjects, default.num_validation_subjects, default.num_test_subjects) == (200, 40, 40)
    custom = smile_synth.make_config(num_train_subjects=5, noise_std=0.02)
    assert custom.name == smile_synth.make_config(noise_std=0.02, num_train_subjects=5).name
    assert custom.name.startswith("s5x40x40_")
    assert custom.name not in ("default", "tiny")
    assert custom.name != smile_synth.make_config(num_train_subjects=5).name
    assert custom.name != smile_synth.make_config(num_train_subjects=5, noise_std=0.02, num_validation_subjects=3).name
    assert custom.num_train_subjects == 5 and custom.noise_std == 0.02
    with pytest.raises(ValueError):
        smile_synth.make_config(num_subjects=3)


def test_tiny_build_reads_back_as_generated(tmp_path):
    builder = smile_synth.build(tmp_path, **TINY)
    config = builder.builder_config
    assert config.name == "tiny"
    assert str(builder.info.version) == "2.0.0"
    assert builder.info.features["label"].names == list(synth.CLASSES)
    assert builder.info.features["style"].names == list(synth.STYLES)

    splits = (("train", 0, 12), ("validation", 12, 4), ("test", 16, 6))
    expected = {}
    for _, offset, count in splits:
        expected.update(synth.generate_examples(config.seed, count, config.clips_per_class, config.num_frames,
                                                config.noise_std, subject_offset=offset))
    subjects = {}
    for split, _, num_subjects in splits:
        source = builder.as_data_source(split)
        assert len(source) == num_subjects * 2 * config.clips_per_class
        examples = [source[i] for i in range(len(source))]
        subjects[split] = {example["subject"].decode() for example in examples}
        assert len(subjects[split]) == num_subjects
        for example in examples:
            want = expected[example["video"].decode()]
            assert example["subject"].decode() == want["subject"]
            assert (example["label"], example["style"]) == (want["label"], want["style"])
            for name in ("landmarks", "clean_landmarks"):
                assert example[name].dtype == np.float32 and example[name].shape == (16, 68, 2)
                np.testing.assert_array_equal(example[name], want[name])
            assert not np.array_equal(example["landmarks"], example["clean_landmarks"])
    # Subject-disjoint splits.
    assert not subjects["train"] & subjects["validation"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["validation"] & subjects["test"]

    # A second build reuses the files.
    files = sorted(os.listdir(builder.data_dir))
    mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]
    again = smile_synth.build(tmp_path, **{k: getattr(config, k) for k in smile_synth.PARAMETERS})
    assert again.data_dir == builder.data_dir
    assert [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files] == mtimes


def test_prepare_refuses_video_options_for_the_generated_data(tmp_path, capsys):
    """--manual_dir and --workers mean nothing to smile_synth: one error line, nothing built."""
    assert prepare.main(["--dataset=smile_synth", f"--data_dir={tmp_path}", "--manual_dir=downloads"]) == 2
    assert "are for uva_nemo and mug" in capsys.readouterr().err and not os.listdir(tmp_path)
