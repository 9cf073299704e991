"""Settings precedence (flags > env > YAML > defaults) and startup validation."""

from __future__ import annotations

import pytest

from rmserve.config import ServerConfig, load_config


def test_defaults_are_valid_and_loopback():
    config = load_config(env={})
    assert config == ServerConfig()
    assert config.host == "127.0.0.1" and config.model is None


def test_precedence_flags_over_env_over_yaml(tmp_path):
    path = tmp_path / "rmserve.yaml"
    path.write_text("max_batch_size: 8\nmax-wait-ms: 7.5\nport: 9000\nwarmup: false\n")
    env = {"RMSERVE_MAX_BATCH_SIZE": "16", "RMSERVE_DEVICE": "cuda:1", "RMSERVE_WARMUP": "yes"}
    config = load_config({"max_batch_size": 64, "port": None}, env=env, yaml_path=str(path))
    assert config.max_batch_size == 64  # flag
    assert config.device == "cuda:1"  # env
    assert config.warmup is True  # env beats yaml
    assert config.max_wait_ms == 7.5 and config.port == 9000  # yaml (a None flag means "not given")


def test_config_file_from_env(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: /models/rm\n")
    assert load_config(env={"RMSERVE_CONFIG": str(path)}).model == "/models/rm"


@pytest.mark.parametrize(
    "kwargs, env, yaml_text, message",
    [
        ({"max_batch_size": 0}, {}, None, "max_batch_size must be >= 1"),
        ({}, {"RMSERVE_PORT": "eighty"}, None, "port: expected int"),
        ({}, {"RMSERVE_WARMUP": "maybe"}, None, "expected a boolean"),
        ({}, {}, "max_batch_sise: 3\n", "unknown setting 'max_batch_sise'"),
        ({"max_items_per_request": 10, "max_queue_items": 5}, {}, None, "could never be admitted"),
        ({"log_level": "loud"}, {}, None, "log_level must be one of"),
    ],
)
def test_invalid_settings_fail_with_a_fix(tmp_path, kwargs, env, yaml_text, message):
    yaml_path = None
    if yaml_text is not None:
        yaml_path = tmp_path / "bad.yaml"
        yaml_path.write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        load_config(kwargs, env=env, yaml_path=str(yaml_path) if yaml_path else None)
