"""The smile_synth TFDS builder: array_record files read back without TensorFlow."""

import os

import numpy as np
import pytest

from cmm_jax.data import synth
from datasets.smile_synth import smile_synth_dataset_builder as smile_synth


def test_config_names():
    assert smile_synth.make_config() is smile_synth.Builder.builder_configs["default"]
    tiny = dict(num_train_subjects=12, num_test_subjects=6, clips_per_class=2, num_frames=16)
    assert smile_synth.make_config(**tiny) is smile_synth.Builder.builder_configs["tiny"]
    custom = smile_synth.make_config(num_train_subjects=5, noise_std=0.02)
    assert custom.name == smile_synth.make_config(noise_std=0.02, num_train_subjects=5).name
    assert custom.name not in ("default", "tiny")
    assert custom.name != smile_synth.make_config(num_train_subjects=5).name
    assert custom.num_train_subjects == 5 and custom.noise_std == 0.02
    with pytest.raises(ValueError):
        smile_synth.make_config(num_subjects=3)


def test_tiny_build_reads_back_as_generated(tmp_path):
    builder = smile_synth.build(tmp_path, num_train_subjects=12, num_test_subjects=6, clips_per_class=2, num_frames=16)
    config = builder.builder_config
    assert config.name == "tiny"
    assert builder.info.features["label"].names == list(synth.CLASSES)
    assert builder.info.features["style"].names == list(synth.STYLES)

    expected = {}
    for offset, count in ((0, config.num_train_subjects), (config.num_train_subjects, config.num_test_subjects)):
        expected.update(synth.generate_examples(config.seed, count, config.clips_per_class, config.num_frames,
                                                config.noise_std, subject_offset=offset))
    subjects = {}
    for split, num_subjects in (("train", 12), ("test", 6)):
        source = builder.as_data_source(split)
        assert len(source) == num_subjects * 2 * config.clips_per_class
        examples = [source[i] for i in range(len(source))]
        subjects[split] = {example["subject"].decode() for example in examples}
        assert len(subjects[split]) == num_subjects
        for example in examples:
            want = expected[example["video"].decode()]
            assert example["subject"].decode() == want["subject"]
            assert (example["label"], example["style"]) == (want["label"], want["style"])
            assert example["landmarks"].dtype == np.float32 and example["landmarks"].shape == (16, 68, 2)
            np.testing.assert_array_equal(example["landmarks"], want["landmarks"])
    assert not subjects["train"] & subjects["test"]

    # A second build reuses the files.
    files = sorted(os.listdir(builder.data_dir))
    mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]
    again = smile_synth.build(tmp_path, **{k: getattr(config, k) for k in smile_synth.PARAMETERS})
    assert again.data_dir == builder.data_dir
    assert [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files] == mtimes
