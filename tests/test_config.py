import pytest

from coverhunter.config import Config, ConfigError, ExtractConfig, load_config, load_extract_config, to_dict

from .conftest import reference_dir


def test_defaults_and_overrides():
    cfg = load_config(None, ["optim.max_epochs=3", "data.chunk_frame=[10, 20]", "eval.distance=mean"])
    assert cfg.optim.max_epochs == 3 and cfg.data.chunk_frame == (10, 20)
    assert cfg.eval.distance == "mean"
    assert load_config(to_dict(cfg)) == cfg  # round trip through a plain dict
    yaml_style = load_config(None, ["optim.amp=true"])
    assert yaml_style.optim.amp is True and load_config(None, ["optim.amp=false"]).optim.amp is False


def test_unknown_key_and_bad_type_raise():
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({"model": {"n_layer": 3}})
    with pytest.raises(ConfigError, match="expected int"):
        load_config({"model": {"n_layers": "three"}})
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["nonsense"])


def test_seed_hparams_are_translated():
    cfg = load_config(reference_dir() / "config" / "hparams.yaml")
    assert isinstance(cfg, Config)
    assert cfg.model.n_layers == 6 and cfg.model.ffn_dim == 256 and cfg.model.n_classes == 50
    assert cfg.loss.triplet_margin == 0.3 and cfg.loss.focal_gamma == 2
    assert cfg.data.chunk_frame == (1125, 900, 675) and cfg.data.m_per_class == 8
    assert cfg.optim.adam_b1 == 0.8 and cfg.eval.chunk_s == 135
    assert dict(cfg.eval.test_sets)["covers80"]  # the seed's test-set block


def test_extract_config(tmp_path):
    assert load_extract_config(tmp_path / "none.yaml") == ExtractConfig()
    p = tmp_path / "h.yaml"
    p.write_text("aug_speed_mode: [0.8, 1.0]\nsplit: {train: 0.5, val: 0.5, test: 0}\n")
    c = load_extract_config(p)
    assert c.aug_speed_mode == (0.8, 1.0) and c.split.test == 0.0
    p.write_text("add_noise: {prob: 0.5}\n")
    with pytest.warns(UserWarning, match="add_noise"):
        load_extract_config(p)
    p.write_text("bogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_extract_config(p)
    p.write_text("[1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_extract_config(p)
