from pathlib import Path

import pytest

from mct.config import (CONFIGS_DIR, Config, ModelConfig, config_keys, field_help, load_config, parse_set,
                        read_toml, resolve_config, save_config_toml, to_toml, validate_config)
from mct.errors import ConfigError, MctError


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def run_dir(tmp_path):
    """A run folder whose saved config.toml says lr 0.005, max_steps 4, batch_size 16."""
    run = tmp_path / "run"
    run.mkdir()
    config = load_config(None, {"train": {"lr": 0.005, "max_steps": 4, "batch_size": 16}}, environ={})
    save_config_toml(config, run / "config.toml")
    return run


# ---- each source alone --------------------------------------------------------------------------

def test_defaults_without_file():
    config = resolve_config(None, environ={})
    assert config.model.d_model == 256 and config.train.device == "auto"


def test_source_toml_file(tmp_path):
    config = resolve_config(write(tmp_path, "[train]\nbatch_size = 32\n"), environ={})
    assert config.train.batch_size == 32


def test_source_environment_converts_types_and_nested_names():
    config = resolve_config(None, environ={"MCT_MODEL__USE_ROPE": "false", "MCT_DATA__OOD_DIGITS": "[4, 6]",
                                           "MCT_TRAIN__LR": "3e-3", "mct_train__seed": "5"})
    assert config.model.use_rope is False and config.data.ood_digits == (4, 6)
    assert config.train.lr == 3e-3 and config.train.seed == 5


def test_source_environment_table_as_json_object():
    assert resolve_config(None, environ={"MCT_TRAIN": '{"lr": 0.5}'}).train.lr == 0.5


def test_source_data_folder():
    config = resolve_config(None, data={"task": "sub", "use_steps": True}, environ={})
    assert config.data.task == "sub" and config.data.use_steps


def test_source_flags_skip_values_not_given():
    config = resolve_config(None, flags={"train.lr": (0.02, "--lr"), "train.seed": (None, "--seed")}, environ={})
    assert config.train.lr == 0.02 and config.train.seed == 0


def test_source_set_reads_toml_values_and_plain_text():
    config = resolve_config(None, sets=["train.lr=3e-3", "data.ood_digits=[4, 6]", "train.device=cuda:1",
                                        "model.use_rope=false", "train.num_threads=none", 'data.train_path="a b"'],
                            environ={})
    assert config.train.lr == 3e-3 and config.data.ood_digits == (4, 6) and config.train.device == "cuda:1"
    assert config.model.use_rope is False and config.train.num_threads is None
    assert config.data.train_path == Path("a b")


def test_set_none_is_the_choice_named_none_where_a_key_has_one():
    # absolute_positions and step_masking_mode have a choice called "none"; elsewhere none clears the key
    config = resolve_config(None, sets=["model.absolute_positions=none", "data.step_masking_mode=None",
                                        "train.num_threads=none", "data.sub_complement=null"], environ={})
    assert config.model.absolute_positions == "none" and config.data.step_masking_mode == "none"
    assert config.train.num_threads is None and config.data.sub_complement is None
    assert parse_set("model.absolute_positions=null") == (("model", "absolute_positions"), None)


def test_a_format_changed_over_a_config_file_gets_a_context_and_mixes_that_fit_it(tmp_path):
    default = CONFIGS_DIR / "default.toml"  # 3-digit addition: context 16, chain_mix 0.1
    steps = resolve_config(default, sets=["data.use_steps=true"], environ={})
    assert steps.data.max_seq_len == steps.model.max_seq_len == 41  # "999+999=" and its steps
    mul = resolve_config(default, sets=["data.task=mul", "data.use_steps=true"], environ={})
    assert mul.data.chain_mix == 0 and mul.data.max_seq_len == mul.model.max_seq_len == 47
    plain = resolve_config(default, environ={})  # the file's own format: as written
    assert (plain.data.max_seq_len, plain.model.max_seq_len, plain.data.chain_mix) == (16, 16, 0.1)
    assert plain.data.edge_mix == 0.1  # add's own mix: dropped for sub, whose chain_mix stays
    sub = resolve_config(default, sets=["data.task=sub"], environ={})
    assert (sub.data.edge_mix, sub.data.chain_mix) == (0.0, 0.1)
    wide = write(tmp_path, "[model]\nmax_seq_len = 64\n[data]\nmax_seq_len = 16\nuse_steps = true")
    config = load_config(wide, environ={})  # raised to the longest example, never lowered
    assert (config.data.max_seq_len, config.model.max_seq_len) == (41, 64)
    # what the user gives is kept as given, and errors name it
    kept = resolve_config(default, sets=["data.use_steps=true", "data.max_seq_len=20", "model.max_seq_len=20"],
                          environ={})
    assert (kept.data.max_seq_len, kept.model.max_seq_len) == (20, 20)
    from_env = resolve_config(default, sets=["data.use_steps=true"], environ={"MCT_DATA__MAX_SEQ_LEN": "16"})
    assert (from_env.data.max_seq_len, from_env.model.max_seq_len) == (16, 41)
    with pytest.raises(ConfigError, match="chain_mix applies to add and sub.*--set data.chain_mix"):
        resolve_config(default, sets=["data.task=mul", "data.chain_mix=0.1"], environ={})
    with pytest.raises(ConfigError, match="chain_mix applies to add and sub.*MCT_DATA__CHAIN_MIX"):
        resolve_config(default, sets=["data.task=mul"], environ={"MCT_DATA__CHAIN_MIX": "0.1"})
    mul_file = write(tmp_path, "[data]\ntask = 'mul'\nnines_mix = 0.1")  # mul's own mix, dropped for add
    assert resolve_config(mul_file, sets=["data.task=add"], environ={}).data.nines_mix == 0
    assert load_config(mul_file, environ={}).data.nines_mix == 0.1


def test_a_data_folder_raises_the_context_to_its_longest_example_and_never_lowers_it(tmp_path):
    data = {"task": "add", "use_steps": True, "max_seq_len": 41}
    config = resolve_config(None, data=data, environ={})  # field defaults: 512, kept
    assert config.model.max_seq_len == 512 and config.data.max_seq_len == 512
    short = write(tmp_path, "[model]\nmax_seq_len = 16\n[data]\nmax_seq_len = 16")
    config = resolve_config(short, data=data, environ={})
    assert config.model.max_seq_len == 41 and config.data.max_seq_len == 41
    config = resolve_config(short, data=data, sets=["model.max_seq_len=60", "data.max_seq_len=50"], environ={})
    assert (config.model.max_seq_len, config.data.max_seq_len) == (60, 50)  # flags and --set still win
    config = resolve_config(short, data=data, environ={"MCT_MODEL__MAX_SEQ_LEN": "64"})
    assert config.model.max_seq_len == 64 and config.data.max_seq_len == 41
    with pytest.raises(ConfigError, match="MCT_MODEL__MAX_SEQ_LEN"):
        resolve_config(short, data=data, environ={"MCT_MODEL__MAX_SEQ_LEN": "long"})


def test_source_run_config_on_resume(run_dir):
    config = resolve_config(None, resume=run_dir, environ={})
    assert (config.train.lr, config.train.max_steps, config.train.batch_size) == (0.005, 4, 16)


def test_source_checkpoint_config_errors_name_the_checkpoint():
    with pytest.raises(ConfigError, match=r"checkpoint x\.pt, key train\.lr: Input should be greater than 0"):
        validate_config({"train": {"lr": -1}}, source="checkpoint x.pt")


# ---- precedence, pair by pair ------------------------------------------------------------------

def test_toml_beats_defaults(tmp_path):
    assert resolve_config(write(tmp_path, "[train]\nlr = 0.01\n"), environ={}).train.lr == 0.01


def test_env_beats_toml(tmp_path):
    path = write(tmp_path, "[train]\nlr = 0.01\ndevice = 'cpu'\n")
    config = resolve_config(path, environ={"MCT_TRAIN__DEVICE": "cuda"})
    assert (config.train.device, config.train.lr) == ("cuda", 0.01)


def test_data_folder_beats_env():
    config = resolve_config(None, data={"task": "mul"}, environ={"MCT_DATA__TASK": "sub", "MCT_DATA__MAX_DIGITS": "2"})
    assert config.data.task == "mul" and config.data.max_digits == 2


def test_flags_beat_data_folder_and_env():
    config = resolve_config(None, data={"max_digits": 2}, flags={"data.max_digits": (4, "--max-digits")},
                            environ={"MCT_DATA__MAX_DIGITS": "3"})
    assert config.data.max_digits == 4


def test_set_beats_flags_and_later_set_wins():
    config = resolve_config(None, flags={"train.lr": (0.1, "--lr")}, sets=["train.lr=0.2", "train.lr=0.3"],
                            environ={})
    assert config.train.lr == 0.3


def test_run_config_replaces_defaults_and_default_toml(run_dir):
    config = resolve_config(None, resume=run_dir, environ={})
    assert config.train.max_steps == 4  # not the field default 5000


def test_env_beats_run_config_on_resume(run_dir):
    config = resolve_config(None, resume=run_dir, environ={"MCT_TRAIN__MAX_STEPS": "8"})
    assert config.train.max_steps == 8 and config.train.lr == 0.005


def test_flags_and_set_beat_run_config_on_resume(run_dir):
    config = resolve_config(None, resume=run_dir, flags={"train.max_steps": (9, "--max-steps")},
                            sets=["train.eval_every=3"], environ={"MCT_TRAIN__MAX_STEPS": "8"})
    assert config.train.max_steps == 9 and config.train.eval_every == 3


def test_config_file_on_resume_sits_above_the_run_config_and_below_env(tmp_path, run_dir):
    path = write(tmp_path, "[train]\nmax_steps = 6\nlr = 0.002\n")
    config = resolve_config(path, resume=run_dir, environ={"MCT_TRAIN__LR": "0.003"})
    assert (config.train.max_steps, config.train.lr, config.train.batch_size) == (6, 0.003, 16)


def test_load_config_overrides_ignore_none(tmp_path):
    path = write(tmp_path, "[train]\nbatch_size = 32\nlr = 0.01\n")
    config = load_config(path, overrides={"train": {"batch_size": 8, "lr": None}}, environ={"MCT_TRAIN__BATCH_SIZE": "48"})
    assert (config.train.batch_size, config.train.lr) == (8, 0.01)


# ---- every error names the key and its source ---------------------------------------------------

def test_error_from_toml_names_file_and_key(tmp_path):
    path = write(tmp_path, "[train]\nbatch_size = 'lots'\n")
    with pytest.raises(ConfigError, match=r"config file .*c\.toml, key train\.batch_size: .*integer.*'lots'"):
        resolve_config(path, environ={})


def test_error_from_env_names_the_variable():
    with pytest.raises(ConfigError, match=r"environment variable MCT_MODEL__FFN_TYPE \(model\.ffn_type\): "
                                          r".*'gelu', 'geglu' or 'swiglu'"):
        resolve_config(None, environ={"MCT_MODEL__FFN_TYPE": "relu"})


def test_error_from_flag_names_the_flag():
    with pytest.raises(ConfigError, match=r"flag --precision \(train\.precision\): .*'auto', 'fp32', 'bf16' or 'fp16'"):
        resolve_config(None, flags={"train.precision": ("fp8", "--precision")}, environ={})


def test_error_from_set_names_the_item():
    with pytest.raises(ConfigError, match=r"--set train\.lr: Input should be greater than 0"):
        resolve_config(None, sets=["train.lr=-1"], environ={})


def test_error_from_data_folder_names_the_folder():
    with pytest.raises(ConfigError, match=r"data folder d, key data\.task"):
        resolve_config(None, data={"task": "div"}, data_source="data folder d", environ={})


def test_error_in_config_file_on_resume_is_blamed_on_the_file_not_a_flag(tmp_path, run_dir):
    path = write(tmp_path, "[train]\nlr = -1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, resume=run_dir, environ={})
    assert f"config file {path}, key train.lr" in str(info.value) and "flag" not in str(info.value)


def test_error_in_run_config_names_it(run_dir):
    (run_dir / "config.toml").write_text("[train]\nlr = 'fast'\n")
    with pytest.raises(ConfigError, match=r"run config .*config\.toml, key train\.lr"):
        resolve_config(None, resume=run_dir, environ={})


def test_cross_field_error_names_each_source(tmp_path):
    path = write(tmp_path, "[model]\nnum_heads = 4\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, flags={"model.d_model": (30, "--d-model")}, environ={})
    message = str(info.value)
    assert "d_model (30) must be divisible by num_heads (4)" in message
    assert "model.d_model from flag --d-model" in message and f"model.num_heads from config file {path}" in message


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = write(tmp_path, "[model]\nd_modell = 64\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, environ={})
    message = str(info.value)
    assert "c.toml" in message and "model.d_modell" in message and "did you mean d_model?" in message
    assert "\n" not in message


def test_unknown_table(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown table \[optimizer\] \(allowed: model, data, train, generate"):
        resolve_config(write(tmp_path, "[optimizer]\nlr = 1\n"), environ={})


def test_value_where_a_table_belongs(tmp_path):
    with pytest.raises(ConfigError, match=r"\[model\] must be a table of keys, not 5"):
        resolve_config(write(tmp_path, "model = 5\n"), environ={})


def test_env_variable_named_like_a_table_is_one_clear_error():
    with pytest.raises(MctError, match=r"MCT_TRAIN: \[train\] is a table, not a value; set one key with MCT_TRAIN__<KEY>"):
        resolve_config(None, environ={"MCT_TRAIN": "5"})


def test_env_variable_for_unknown_table():
    with pytest.raises(MctError, match="MCT_OPTIM__LR names no config table"):
        resolve_config(None, environ={"MCT_OPTIM__LR": "1"})


def test_non_utf8_env_value_is_a_validation_error_not_a_crash():
    with pytest.raises(ConfigError, match="MCT_TRAIN__LR"):
        resolve_config(None, environ={"MCT_TRAIN__LR": "\udcff"})


@pytest.mark.parametrize("key, value, fragment", [
    ("train.seed", "99999999999999999999999", "less than or equal to 4294967295"),
    ("model.d_model", "99999999999999", "less than or equal to 1048576"),
    ("data.n_train", "100000000000", "less than or equal to 2147483647"),
    ("train.lr", "inf", "finite number"),
    ("train.lr", "nan", "finite number"),
])
def test_huge_and_non_finite_numbers_are_refused(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(None, sets=[f"{key}={value}"], environ={})


@pytest.mark.parametrize("item, fragment", [
    ("train.lr", "write KEY=VALUE"),
    ("lr=3", "did you mean train.lr"),
    ("=3", "write KEY=VALUE"),
])
def test_malformed_set_items(item, fragment):
    with pytest.raises(MctError, match=fragment):
        parse_set(item)


# ---- files ---------------------------------------------------------------------------------------

def test_missing_file_is_an_error_that_names_the_shipped_configs(tmp_path):
    from mct.config import DEFAULT_CONFIG_PATH

    shipped = DEFAULT_CONFIG_PATH.parent
    with pytest.raises(MctError, match=f"does not exist; pass an existing TOML file \\(the shipped ones are in {shipped}"):
        load_config(tmp_path / "absent.toml")
    # `configs/add5.toml` typed outside the checkout
    with pytest.raises(MctError, match=f"\\(the shipped one is {shipped / 'add5.toml'}\\)"):
        load_config(tmp_path / "configs" / "add5.toml")


def test_folder_given_as_config_says_so(tmp_path):
    with pytest.raises(MctError, match="is a folder; pass a TOML file"):
        resolve_config(tmp_path, environ={})


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(MctError, match=r"c\.toml is not valid TOML"):
        resolve_config(write(tmp_path, "[train\nbatch_size = 3"), environ={})


def test_non_utf8_toml_names_the_file_and_byte(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"[train]\ndevice = '\xff'\n")
    with pytest.raises(MctError, match=r"c\.toml is not UTF-8 text \(byte b'\\xff' at offset 18\)"):
        resolve_config(path, environ={})


def test_integer_of_5000_digits_in_toml(tmp_path):
    with pytest.raises(MctError, match="not valid TOML: Exceeds the limit"):
        resolve_config(write(tmp_path, "[train]\nseed = " + "9" * 5000 + "\n"), environ={})


def test_resume_without_config_toml(tmp_path):
    with pytest.raises(MctError, match="has no config.toml"):
        resolve_config(None, resume=tmp_path, environ={})


# ---- cross-field checks --------------------------------------------------------------------------

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


@pytest.mark.parametrize("name", ["runs/a\nb", 'quote"and\\back', "[model]\nd_model = 1", "tab\there", "ünï"])
def test_awkward_paths_round_trip_through_config_toml(tmp_path, name):
    config = load_config(None, overrides={"data": {"train_path": name}, "train": {"out_dir": name}}, environ={})
    save_config_toml(config, tmp_path / "config.toml")
    assert validate_config(read_toml(tmp_path / "config.toml")) == config


def test_paths_that_cannot_be_saved_are_refused():
    with pytest.raises(ConfigError, match="NUL"):
        load_config(None, overrides={"data": {"train_path": "a\x00b"}}, environ={})
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(None, overrides={"train": {"out_dir": "run-\udcff"}}, environ={})


def test_model_config_head_dim():
    assert ModelConfig(d_model=64, num_heads=4).head_dim == 16


def test_every_key_has_help_from_its_description():
    keys = config_keys()
    assert "train.lr" in keys and len(keys) == sum(len(s.annotation.model_fields) for s in Config.model_fields.values())
    assert field_help("train.lr") == "Peak learning rate (train.lr, default 0.001)."
    assert field_help("model.use_rope").endswith("(model.use_rope, default true).")


def test_help_shows_the_default_file_value_where_it_sets_the_key(tmp_path):
    """`mct train` with no --config reads configs/default.toml, so its --help shows that file's values."""
    shipped = read_toml(CONFIGS_DIR / "default.toml")
    assert field_help("model.d_model", CONFIGS_DIR / "default.toml") == (
        f"Width of the residual stream (model.d_model, default {shipped['model']['d_model']} in configs/default.toml).")
    assert field_help("train.compile", CONFIGS_DIR / "default.toml").endswith("(train.compile, default false).")
    broken = tmp_path / "default.toml"
    broken.write_text("[model\n")
    assert field_help("model.d_model", broken).endswith("(model.d_model, default 256).")


@pytest.mark.parametrize("data,fragment", [
    ("task = \"add\"", "applies to the mod task"),
    ("task = \"mod\"\nanswer_order = \"reversed\"", "answer_order = \"plain\""),
    ("task = \"mod\"\nanswer_order = \"plain\"\npad_operands = true", "no padding"),
    ("task = \"mod\"\nanswer_order = \"plain\"\nuse_steps = true\nstep_masking_mode = \"none\"", "no steps"),
])
def test_residue_tokens_outside_their_format_are_one_clear_error(tmp_path, data, fragment):
    path = write(tmp_path, f"[data]\nresidue_tokens = true\n{data}\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, environ={})
    message = str(info.value)
    assert fragment in message and "data.residue_tokens from config file" in message and "\n" not in message.strip()


def test_residue_tokens_refuse_place_value_positions(tmp_path):
    path = write(tmp_path, "[data]\nresidue_tokens = true\ntask = \"mod\"\nanswer_order = \"plain\"\n"
                           "[model]\nuse_rope = false\nabsolute_positions = \"abacus\"\n")
    with pytest.raises(ConfigError, match="numbers the places of digits, and data.residue_tokens writes none"):
        resolve_config(path, environ={})
