"""Config loading: presets, overrides, and errors that name the bad key before any work starts."""

import pytest

from dva.config import load_config
from dva.errors import ConfigError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config


def test_presets_load():
    tiny = load_config(ModelConfig, "tiny", group="model")
    big = load_config(ModelConfig, "dva256", group="model")
    assert tiny.unet.image_size == 32 and big.unet.channel_mult == [1, 1, 2, 2, 4, 4]


def test_overrides_apply():
    cfg = load_config(ModelConfig, "tiny", ["unet.model_channels=16", "unet.dropout=0.1"], group="model")
    assert cfg.unet.model_channels == 16 and cfg.unet.dropout == 0.1


@pytest.mark.parametrize("override,key", [
    ("unet.model_chanels=16", "unet.model_chanels"),
    ("unet.image_size=big", "unet.image_size"),
    ("identity_encoder.weigths=/x", "identity_encoder.weigths"),
    ("unet.image_size=50", "unet.image_size"),
    ("z_face_dim=64", "z_face_dim"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config(ModelConfig, "tiny", [override], group="model")
    # one line, without omegaconf's own `full_key:` / `object_type=` context after it
    assert "\n" not in str(err.value) and "full_key" not in str(err.value) and "object_type" not in str(err.value)


def test_groupnorm_incompatible_widths_are_named():
    cfg = load_config(ModelConfig, "tiny", ["unet.model_channels=16", "unet.channel_mult=[1,2]"], group="model")
    with pytest.raises(ConfigError, match="unet.model_channels"):
        DiffusionVideoAutoencoder(cfg)


def test_unknown_key_in_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("unet:\n  num_res_blokcs: 2\n")
    with pytest.raises(ConfigError, match="num_res_blokcs"):
        load_config(ModelConfig, bad)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_config(ModelConfig, "tinyy", group="model")


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(ModelConfig, "tiny", ["unet.dropout"], group="model")


def test_faces_match_min_cosine_is_a_cosine(tmp_path):
    paths = ["random_weights=true", f"input={tmp_path}", f"output={tmp_path / 'out'}"]
    assert load_job_config(EditJobConfig, "local_tiny", paths).faces_match_min_cosine == 0.5
    lowest = load_job_config(EditJobConfig, "local_tiny", [*paths, "faces_match_min_cosine=-1"])
    assert lowest.faces_match_min_cosine == -1
    with pytest.raises(ConfigError, match="faces_match_min_cosine"):
        load_job_config(EditJobConfig, "local_tiny", [*paths, "faces_match_min_cosine=1.5"])
