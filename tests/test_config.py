from pathlib import Path

import pytest

from mct.config import CONFIGS_DIR, Config, ModelConfig, load_config, read_toml, to_toml
from mct.errors import MctError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    config = load_config(None, environ={})
    assert config.model.d_model == 256 and config.train.device == "auto"


def test_precedence_toml_then_env_then_cli(tmp_path):
    path = write(tmp_path, "[train]\nbatch_size = 32\nlr = 0.01\ndevice = 'cpu'\n")
    assert load_config(path, environ={}).train.batch_size == 32
    env = {"MCT_TRAIN__BATCH_SIZE": "48", "MCT_TRAIN__DEVICE": "cuda"}
    config = load_config(path, environ=env)
    assert (config.train.batch_size, config.train.device, config.train.lr) == (48, "cuda", 0.01)
    config = load_config(path, overrides={"train": {"batch_size": 8, "lr": None}}, environ=env)
    assert (config.train.batch_size, config.train.lr) == (8, 0.01), "None flags must not override"


def test_env_converts_types_and_nested_names():
    config = load_config(None, environ={"MCT_MODEL__USE_ROPE": "false", "MCT_DATA__OOD_DIGITS": "[4, 6]"})
    assert config.model.use_rope is False
    assert config.data.ood_digits == (4, 6)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(MctError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[train\nbatch_size = 3")
    with pytest.raises(MctError, match=r"c\.toml is not valid TOML"):
        load_config(path, environ={})


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = write(tmp_path, "[model]\nd_modell = 64\n")
    with pytest.raises(MctError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "c.toml" in message and "model.d_modell" in message and "d_model" in message
    assert "\n" not in message


def test_unknown_table(tmp_path):
    path = write(tmp_path, "[optimizer]\nlr = 1\n")
    with pytest.raises(MctError, match="unknown key 'optimizer'.*model, data, train"):
        load_config(path, environ={})


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "[train]\nbatch_size = 'lots'\n")
    with pytest.raises(MctError, match=r"train\.batch_size.*'lots'"):
        load_config(path, environ={})


def test_unknown_ffn_type_lists_allowed_values():
    with pytest.raises(MctError, match=r"environment variable MCT_MODEL__FFN_TYPE.*'gelu', 'geglu' or 'swiglu'"):
        load_config(None, environ={"MCT_MODEL__FFN_TYPE": "relu"})


def test_unknown_step_masking_mode_lists_allowed_values():
    with pytest.raises(MctError, match="'none', 'mask_steps' or 'mask_answer'"):
        load_config(None, overrides={"data": {"step_masking_mode": "all"}}, environ={})


def test_d_model_not_divisible_by_heads():
    with pytest.raises(MctError, match=r"d_model \(100\) must be divisible by num_heads \(8\)"):
        load_config(None, overrides={"model": {"d_model": 100, "num_heads": 8}}, environ={})


def test_odd_head_size_with_rope():
    with pytest.raises(MctError, match="RoPE needs an even head size"):
        load_config(None, overrides={"model": {"d_model": 36, "num_heads": 4}}, environ={})
    config = load_config(None, overrides={"model": {"d_model": 36, "num_heads": 4, "use_rope": False}}, environ={})
    assert config.model.head_dim == 9


def test_mask_answer_needs_steps():
    with pytest.raises(MctError, match="mask_answer.*use_steps"):
        load_config(None, overrides={"data": {"step_masking_mode": "mask_answer"}}, environ={})


def test_data_longer_than_model_context():
    with pytest.raises(MctError, match="data.max_seq_len"):
        load_config(None, overrides={"data": {"max_seq_len": 64}, "model": {"max_seq_len": 32}}, environ={})


def test_env_variable_for_unknown_table():
    with pytest.raises(MctError, match="MCT_OPTIM__LR names no config table"):
        load_config(None, environ={"MCT_OPTIM__LR": "1"})


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = load_config(path, environ={})
    assert isinstance(config, Config)


def test_gpu_small_is_the_seeds_4gb_advice():
    config = load_config(CONFIGS_DIR / "gpu-small.toml", environ={})
    m = config.model
    assert (m.d_model, m.num_layers, m.num_heads, m.d_ff, m.max_seq_len) == (256, 6, 8, 768, 512)
    assert config.train.batch_size == 16


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = load_config(CONFIGS_DIR / "default.toml", overrides={"data": {"ood_digits": [4, 5]}}, environ={})
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(config.to_toml_dict()))
    assert Config.model_validate(read_toml(path)) == config


def test_model_config_head_dim():
    assert ModelConfig(d_model=64, num_heads=4).head_dim == 16
