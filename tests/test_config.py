import pytest

from lsbench.config import ConfigError, format_epsilon, load_schema, to_workflow_config, validate_config

from conftest import REPO

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def base() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_matches_seed_experiment():
    cfg = to_workflow_config(validate_config(base(), SCHEMA))
    assert cfg.seeds == (0, 1, 2) and cfg.epsilons == (0.0, 0.05, 0.1, 0.2, 0.3)
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.model, t.device) == (20, 64, 1e-3, "mlp", "auto")


def test_command_line_strings_are_coerced():
    # What `snakemake --config seeds=[0,1] epsilons=[0.0,0.2] data_dir=null ...` hands over.
    raw = {**base(), "seeds": ["0", "1"], "epsilons": ["0.0", "0.2"], "epochs": "2",
           "lr": "1e-3", "data_dir": "null", "keep_checkpoints": "true"}
    cfg = to_workflow_config(validate_config(raw, SCHEMA))
    assert cfg.seeds == (0, 1) and cfg.epsilons == (0.0, 0.2)
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-3
    assert cfg.data_dir is None and cfg.keep_checkpoints is True
    assert to_workflow_config(validate_config({**base(), "seeds": "3"}, SCHEMA)).seeds == (3,)


@pytest.mark.parametrize("key,value,needles", [
    ("epsilons", [0.0, 1.0], ["epsilons[1]", "1.0", "[0, 1)"]),
    ("epsilons", [0.1, 0.1], ["epsilons", "unique"]),
    ("epsilons", ["abc"], ["epsilons[0]", "'abc'", "not of type"]),
    ("seeds", [-1], ["seeds[0]", "-1", "non-negative"]),
    ("seeds", [1, 1], ["seeds", "non-unique"]),
    ("seeds", [], ["seeds", "non-empty"]),
    ("epochs", 0, ["epochs", "0", ">= 1"]),
    ("batch_size", "big", ["batch_size", "'big'", "integer"]),
    ("lr", 0, ["lr", "> 0"]),
    ("model", "resnet", ["model", "'resnet'", "mlp, linear"]),
    ("device", "gpu", ["device", "'gpu'", "auto, cpu, cuda"]),
    ("validation_size", -1, ["validation_size", "-1", "smaller than the training set"]),
    ("validation_size", 60000, ["validation_size", "60000", "smaller than the training set"]),
])
def test_bad_values_name_key_value_and_allowed(key, value, needles):
    with pytest.raises(ConfigError) as info:
        validate_config({**base(), key: value}, SCHEMA)
    for needle in needles:
        assert needle in str(info.value)


def test_unknown_key_rejected_with_allowed_list():
    with pytest.raises(ConfigError) as info:
        validate_config({**base(), "epoch": 3}, SCHEMA)
    assert "'epoch' was unexpected" in str(info.value) and "epochs" in str(info.value)


def test_every_schema_key_is_commented_in_config_yaml():
    lines = (REPO / "config.yaml").read_text().splitlines()
    for key in SCHEMA["properties"]:
        i = next(n for n, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[i - 1].startswith("#"), key


def test_format_epsilon_round_trips():
    for eps in (0.0, 0.05, 0.1, 0.2, 0.3, 1e-05):
        assert float(format_epsilon(eps)) == eps
    assert format_epsilon(0.05) == "0.05"
