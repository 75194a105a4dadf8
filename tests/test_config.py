import pytest

import mappo
from mappo.config import Config
from mappo.registries import check_registered


def test_defaults_are_valid_and_contract_fields_exist():
    cfg = mappo.Config(total_steps=200_000, num_envs=16, seed=0)
    for name in ("total_steps", "num_envs", "rollout_length", "seed", "device", "lr", "gamma", "gae_lambda",
                 "ppo_epochs", "num_minibatches", "max_grad_norm", "objective", "clip_eps", "kl_coef", "target_kl",
                 "entropy_coef", "value_coef", "value_norm", "hidden_sizes", "parameter_sharing", "critic_input",
                 "wandb", "wandb_project", "wandb_mode", "run_dir"):
        assert hasattr(cfg, name), name


@pytest.mark.parametrize("field,value,pattern", [
    ("lr", -1e-3, "'lr'"),
    ("num_envs", 0, "'num_envs'"),
    ("gamma", 1.5, r"'gamma'.*\[0, 1\]"),
    ("gamma", -0.1, r"'gamma'"),
    ("parameter_sharing", "partial", r"'parameter_sharing'.*\['shared', 'separate'\]"),
    ("objective", "trpo", r"'objective'.*\['clip', 'kl', 'clip_kl'\]"),
    ("critic_input", "global", r"'critic_input'.*\['state', 'concat_obs', 'local', 'agent_specific'\]"),
    ("lr_schedule", "cosine", r"'lr_schedule'.*\['constant', 'linear'\]"),
    ("dead_agents", "respawn", r"'dead_agents'.*\['leave', 'team'\]"),
    ("chunk_length", 0, r"'chunk_length'"),
    ("device", "tpu", r"'device'"),
    ("clip_eps", 0.0, r"'clip_eps'"),
    ("hidden_sizes", [], r"'hidden_sizes'"),
    ("num_minibatches", 10**9, r"'num_minibatches'"),
])
def test_bad_values_raise_value_error_naming_field(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        Config(**{field: value})


@pytest.mark.parametrize("field,value", [("num_envs", 2.5), ("lr", "fast"), ("value_norm", "yes"), ("seed", True)])
def test_bad_types_raise_type_error_naming_field(field, value):
    with pytest.raises(TypeError, match=repr(field)):
        Config(**{field: value})


def test_bad_config_fails_before_any_env_is_built():
    built = []

    def env_fn():
        built.append(1)
        raise AssertionError("env must not be built")

    cfg = Config()
    cfg.lr = -1.0  # mutated after construction: the Trainer validates again
    with pytest.raises(ValueError, match="'lr'"):
        mappo.Trainer(env_fn, cfg)
    # names of parts are checked by their modules (mappo/registries.py), still before any env
    for field, value in (("algorithm", "mapo"), ("encoder", "resnet"), ("loggers", ["stdout"]),
                         ("callbacks", ["early_stoping"]), ("wrappers", [{"frame_stak_v2": {}}]),
                         ("groups", {"a/b": ["x"]}), ("algorithm_options", {"fixed_order": True})):
        with pytest.raises(ValueError, match=f"config field '{field}"):
            mappo.Trainer(env_fn, Config(**{field: value}))
    assert built == []


def test_config_imports_no_other_part_of_mappo():
    import ast
    import inspect

    import mappo.config

    tree = ast.parse(inspect.getsource(mappo.config))
    imported = [node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                if node.level or (node.module or "").startswith("mappo")]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
                 if a.name.startswith(("mappo", "envs"))]
    assert imported == []


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    Config(lr=1e-3, hidden_sizes=[32, 16], env_kwargs={"N": 2}, objective="clip_kl").to_yaml(str(path))
    cfg = Config.from_yaml(str(path), overrides=["lr=3e-4", "parameter_sharing=separate", "hidden_sizes=[8]"])
    assert cfg.lr == 3e-4 and cfg.parameter_sharing == "separate" and cfg.hidden_sizes == [8]
    assert cfg.env_kwargs == {"N": 2} and cfg.objective == "clip_kl"
    again = Config.from_yaml(str(path))
    assert again == Config(lr=1e-3, hidden_sizes=[32, 16], env_kwargs={"N": 2}, objective="clip_kl")


def test_yaml_errors_name_the_problem(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.001\nnot_a_field: 3\n")
    with pytest.raises(ValueError, match="not_a_field"):
        Config.from_yaml(str(path))
    path.write_text("gamma: 2.0\n")
    with pytest.raises(ValueError, match="'gamma'"):
        Config.from_yaml(str(path))
    with pytest.raises(ValueError, match="'objective'"):
        Config.from_yaml(str(tmp_path / "c.yaml"), overrides=["gamma=0.9", "objective=foo"])
    with pytest.raises(FileNotFoundError):
        Config.from_yaml(str(tmp_path / "missing.yaml"))


def test_every_shipped_config_loads():
    import glob

    paths = sorted(glob.glob("configs/*.yaml"))
    assert paths
    for p in paths:
        check_registered(Config.from_yaml(p))


def test_a_saved_config_matches_where_the_wanted_one_leaves_the_choice_to_the_env():
    from mappo.config import changed_settings

    saved = mappo.Config(num_minibatches=4, cnn_channels=[16], cnn_kernels=[3], cnn_strides=[1],
                         cnn_features=128).to_dict()
    assert changed_settings(saved, mappo.Config().to_dict()) == []  # auto matches what the run chose
    assert changed_settings(saved, mappo.Config(num_minibatches=2, lr=1e-3).to_dict()) == ["lr", "num_minibatches"]


def test_whole_numbers_in_scientific_notation_fill_integer_fields(tmp_path):
    """total_steps=1e6 is a million steps (YAML reads 1e6 as a float); 1.5 stays an error."""
    cfg = mappo.Config.from_yaml("configs/mpe_simple_spread.yaml", ["total_steps=1e6"])
    assert cfg.total_steps == 1_000_000 and isinstance(cfg.total_steps, int)
    path = tmp_path / "c.yaml"
    path.write_text("env: mpe/simple_spread\ntotal_steps: 2.5e+5\n")
    assert mappo.Config.from_yaml(str(path)).total_steps == 250_000
    with pytest.raises(ValueError, match="'total_steps' must be an integer; got '1.5'"):
        mappo.Config.from_yaml("configs/mpe_simple_spread.yaml", ["total_steps=1.5"])
