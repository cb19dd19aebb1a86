import math
import re

import pytest
import yaml

from conftest import REPO
from lsbench.cli import main as cli_main
from lsbench.config import (ConfigError, load_schema, raw_overrides, raw_yaml_texts,
                            to_workflow_config, validate_config, validate_options)
from lsbench.methods import format_param

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def base() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_package_reads_the_workflows_schema():
    assert load_schema() == SCHEMA


def test_default_config_is_valid_and_matches_seed_experiment():
    cfg = to_workflow_config(validate_config(base(), SCHEMA))
    assert cfg.datasets == ("fashion_mnist",) and cfg.models == ("mlp",)
    assert cfg.seeds == (0, 1, 2, 3, 4)  # 5 seeds: the claims that hold on AVX2 and AVX-512 kernels (README)
    assert cfg.variants == (("cross_entropy", 0.0), *(("label_smoothing", e) for e in (0.05, 0.1, 0.2, 0.3)))
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.device) == (20, 64, 1e-3, "auto")
    assert cfg.train_config("fashion_mnist").validation_size == 5000


def test_command_line_strings_are_coerced():
    # What `snakemake --config seeds=[0,1] epsilons=[0.0,0.2] data_root=null ...` hands over.
    raw = {**base(), "seeds": ["0", "1"], "epsilons": ["0.0", "0.2"], "epochs": "2", "lr": "1e-3",
           "data_root": "null", "keep_checkpoints": "true", "validation_size": {"fashion_mnist": "16", "digits": "0.1"},
           "datasets": ["fashion_mnist", "digits"]}
    cfg = to_workflow_config(validate_config(raw, SCHEMA))
    assert cfg.seeds == (0, 1) and cfg.variants == (("cross_entropy", 0.0), ("label_smoothing", 0.2))
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-3
    assert cfg.data_root is None and cfg.keep_checkpoints is True
    assert cfg.validation_sizes == {"fashion_mnist": 16, "digits": 0.1}
    assert to_workflow_config(validate_config({**base(), "seeds": "3"}, SCHEMA)).seeds == (3,)


def test_validation_size_mapping_leaves_unnamed_datasets_at_zero():
    raw = {**base(), "datasets": ["fashion_mnist", "digits"], "validation_size": {"digits": 100}}
    assert to_workflow_config(validate_config(raw, SCHEMA)).validation_sizes == {"fashion_mnist": 0, "digits": 100}


@pytest.mark.parametrize("key,value,needles", [
    ("epsilons", [0.0, 1.0], ["epsilons[1]", "1.0", "[0, 1)"]),
    ("epsilons", [0.1, 0.1], ["epsilons", "unique"]),
    ("epsilons", ["abc"], ["epsilons[0]", "'abc'", "not of type"]),
    ("seeds", [-1], ["seeds[0]", "-1", "[0, 2^32 - 1]"]),
    ("seeds", [2**63], ["seeds[0]", str(2**63), "[0, 2^32 - 1]"]),
    ("seeds", [1, 1], ["seeds", "non-unique"]),
    ("seeds", [], ["seeds", "non-empty"]),
    ("epochs", 0, ["epochs", "0", "[1, 100000]"]),
    ("epochs", 2.5, ["epochs", "2.5", "integer"]),
    ("batch_size", "big", ["batch_size", "'big'", "integer"]),
    ("lr", 0, ["lr", "> 0"]),
    ("lr", float("nan"), ["'lr' = nan", "not a finite number"]),
    ("lr", "inf", ["'lr' = inf", "not a finite number"]),
    ("epsilons", [0.1, float("-inf")], ["'epsilons[1]' = -inf", "not a finite number"]),
    ("validation_size", {"digits": float("nan")}, ["validation_size[digits]", "not a finite number"]),
    ("models", ["resnet"], ["models[0]", "'resnet'", "linear, mlp, lenet, resnet20"]),
    ("models", ["my.mod:"], ["models[0]", "'package.module:function'"]),
    ("datasets", ["svhn"], ["datasets[0]", "'svhn'", "fashion_mnist, mnist, kmnist, cifar10, digits"]),
    ("device", "gpu", ["device", "'gpu'", "auto, cpu, cuda"]),
    ("validation_size", -1, ["validation_size", "-1", "at least one training image"]),
    ("validation_size", 1.5, ["validation_size", "1.5", "fraction in (0, 1)"]),
    ("validation_size", {"svhn": 10}, ["validation_size", "svhn"]),
])
def test_bad_values_name_key_value_and_allowed(key, value, needles):
    with pytest.raises(ConfigError) as info:
        validate_config({**base(), key: value}, SCHEMA)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_whole_number_floats_become_integers():
    # `--config epochs=2.0` reaches the Snakefile as the float 2.0; the train job's options need 2.
    config = validate_config({**base(), "epochs": 2.0, "batch_size": "32.0", "seeds": [1.0, "2.0"]}, SCHEMA)
    assert config["epochs"] == 2 and isinstance(config["epochs"], int)
    assert config["batch_size"] == 32 and config["seeds"] == [1, 2] and all(isinstance(s, int) for s in config["seeds"])


def test_digit_only_strings_stay_strings():
    # Snakemake parses `--config data_root=007` as the int 7: the text as typed is recovered.
    config = validate_config({**base(), "data_root": 7}, SCHEMA, raw_overrides(["data_root=007", "seeds=[0]"]))
    assert config["data_root"] == "007"
    assert validate_config({**base(), "data_root": 2024}, SCHEMA)["data_root"] == "2024"  # a YAML int
    assert raw_overrides(["a=b=c", "x"]) == {"a": "b=c"}


def test_unknown_and_renamed_keys_rejected_with_allowed_list():
    with pytest.raises(ConfigError) as info:
        validate_config({**base(), "epoch": 3}, SCHEMA)
    assert "'epoch' was unexpected" in str(info.value) and "epochs" in str(info.value)
    with pytest.raises(ConfigError, match="'data_dir' was replaced by data_root"):
        validate_config({**base(), "data_dir": "/x"}, SCHEMA)


def test_every_schema_key_is_commented_in_config_yaml():
    lines = (REPO / "config" / "config.yaml").read_text().splitlines()
    for key in SCHEMA["properties"]:
        i = next(n for n, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[i - 1].startswith("#"), key


def test_format_param_round_trips():
    for eps in (0.0, 0.05, 0.1, 0.2, 0.3, 1e-05, 0.001, 0.004):
        assert float(format_param(eps)) == eps
    assert format_param(0.05) == "0.05" and format_param(0.001) != format_param(0.004)


@pytest.mark.parametrize("option,key,value,needles", [
    ("--epsilon", "epsilons[]", "-0.5", ["--epsilon = -0.5", "less than the minimum of 0", "[0, 1)"]),
    ("--epsilon", "epsilons[]", "1.5", ["--epsilon = 1.5", "[0, 1)"]),
    ("--lr", "lr", "nan", ["--lr = nan", "not a finite number"]),
    ("--epochs", "epochs", "2.5", ["--epochs = 2.5", "integer"]),
    ("--seed", "seeds[]", "9223372036854775808", ["--seed", "[0, 2^32 - 1]"]),
    ("--model", "models[]", "vgg", ["--model = 'vgg'", "linear, mlp, lenet, resnet20"]),
])
def test_options_follow_the_schema_with_its_messages(option, key, value, needles):
    with pytest.raises(ConfigError) as info:
        validate_options({option: (key, value)})
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    # The same rule in the workflow gives the same reason.
    workflow_key = key.removesuffix("[]")
    bad = {**base(), workflow_key: [value] if key.endswith("[]") else value}
    with pytest.raises(ConfigError) as workflow:
        validate_config(bad, SCHEMA)
    assert str(info.value).split(": ", 1)[1] == str(workflow.value).split(": ", 1)[1]


def test_options_coerce_like_the_workflow():
    got = validate_options({"--epochs": ("epochs", "2.0"), "--seed": ("seeds[]", "3"),
                            "--validation-size": ("validation_size", "0.25"), "--lr": ("lr", "1e-3")})
    assert got == {"--epochs": 2, "--seed": 3, "--validation-size": 0.25, "--lr": 1e-3}
    assert isinstance(got["--epochs"], int) and not math.isnan(got["--lr"])


@pytest.mark.parametrize("args,needle", [
    (["--epsilon", "-0.5"], "--epsilon = -0.5"),
    (["--epsilon", "0.1", "--lr", "inf"], "--lr = inf"),
    (["--epsilon", "0.1", "--model", "nope"], "--model = 'nope'"),
    (["--epsilon", "0.1", "--dataset", "svhn"], "--dataset = 'svhn'"),
])
def test_lsbench_train_validates_before_any_work(tmp_path, capsys, args, needle):
    argv = ["train", "--dataset", "fashion_mnist", "--model", "mlp", "--data", str(tmp_path / "none.npz"),
            "--out-dir", str(tmp_path / "run"), "--seed", "0", *args]
    # argparse keeps the last of a repeated option, so later ones override the defaults above.
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option,key,value,needle", [
    # A oneOf key says which bound the value breaks, not why it is not a mapping.
    ("--validation-size", "validation_size", "-1", "-1 is less than the minimum of 0"),
    ("--validation-size", "validation_size", "1.5", "1.5 is greater than or equal to the maximum of 1"),
    # One list item is described as an item, not as the list.
    ("--seed", "seeds[]", "-1", "Allowed: an integer in [0, 2^32 - 1]"),
    ("--dataset", "datasets[]", "svhn", "Allowed: a dataset name, one of:"),
])
def test_option_messages_name_the_broken_rule(option, key, value, needle):
    with pytest.raises(ConfigError) as info:
        validate_options({option: (key, value)})
    assert needle in str(info.value), str(info.value)
    assert "is not of type 'object'" not in str(info.value) and "a non-empty list" not in str(info.value)


def test_a_non_finite_number_gets_one_message():
    with pytest.raises(ConfigError) as info:
        validate_options({"--epochs": ("epochs", "nan")})
    assert str(info.value).count("--epochs") == 1 and "not a finite number" in str(info.value), str(info.value)


def test_an_ood_entry_can_be_switched_off_from_the_command_line():
    # What `snakemake --config 'ood={fashion_mnist: null}'` hands over when the text is not YAML-parsed.
    typed = raw_overrides(["ood={fashion_mnist: null}"])
    got = validate_config({**base(), "ood": {"fashion_mnist": "null"}}, SCHEMA, typed)
    assert got["ood"] == {"fashion_mnist": None}


def test_lsbench_train_checks_its_data_and_ood_set(tmp_path, capsys, tiny_dataset_file):
    common = ["train", "--model", "mlp", "--out-dir", str(tmp_path / "run"), "--seed", "0", "--epsilon", "0"]
    # The Fashion-MNIST cache under another dataset's name, and as its own OOD set.
    assert cli_main([*common, "--dataset", "mnist", "--data", str(tiny_dataset_file)]) == 1
    assert "not mnist" in capsys.readouterr().err
    assert cli_main([*common, "--dataset", "fashion_mnist", "--data", str(tiny_dataset_file),
                     "--ood-set", "fashion_mnist", "--ood-data", str(tiny_dataset_file)]) == 1
    err = capsys.readouterr().err
    assert "--ood-set = 'fashion_mnist': a dataset cannot be its own out-of-distribution set" in err, err
    assert cli_main([*common, "--dataset", "fashion_mnist", "--data", str(tiny_dataset_file),
                     "--ood-set", "digits", "--ood-data", str(tiny_dataset_file)]) == 1
    assert "not digits" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_config_files_strings_are_taken_as_written(tmp_path):
    # YAML reads `data_root: 2024.10` as the float 2024.1; the folder is named "2024.10".
    own = tmp_path / "mine.yaml"
    own.write_text("data_root: 2024.10\nepochs: 3\n")
    typed = raw_yaml_texts([REPO / "config" / "config.yaml", own, tmp_path / "missing.yaml"])
    got = validate_config({**base(), **yaml.safe_load(own.read_text())}, SCHEMA, typed)
    assert got["data_root"] == "2024.10" and got["epochs"] == 3


@pytest.mark.parametrize("override,needle", [
    ({"datasets": ["digits"]}, "config key 'validation_size' = 5000: digits has 1437 training images"),
    ({"datasets": ["fashion_mnist", "digits"], "validation_size": {"digits": 2000}},
     "config key 'validation_size[digits]' = 2000: digits has 1437"),
    ({"validation_size": 0.00001}, "holds out 0 (use 0 for none"),
])
def test_validation_size_is_checked_against_each_datasets_size(override, needle):
    # Caught before any job: the runs of such a grid would all fail at their start.
    with pytest.raises(ConfigError) as info:
        validate_config({**base(), **override}, SCHEMA)
    assert needle in str(info.value), str(info.value)
    assert validate_config({**base(), "datasets": ["digits"], "validation_size": 0.1}, SCHEMA)["validation_size"] == 0.1


@pytest.mark.parametrize("value,needle", [
    (["rotation", "bogus"], "'shifts[1]' = 'bogus': unknown shift. Allowed: all, null, or a list of unique names of: rotation"),
    (["rotation", "rotation"], "'shifts[1]' = 'rotation': a repeated shift"),
    ([], "'shifts' = []: an empty list (use null for no shifts)"),
    ("ALL", "'shifts[0]' = 'ALL': unknown shift"),
])
def test_a_bad_shifts_value_names_the_item(value, needle):
    from lsbench.config import ConfigError, load_schema, validate_config

    config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "shifts": value}
    with pytest.raises(ConfigError) as err:
        validate_config(config, load_schema())
    assert needle in str(err.value)


def test_shifts_all_a_name_and_null():
    from lsbench.config import load_schema, shift_list, validate_config
    from lsbench.shifts import SHIFTS

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for value, expected in (("all", tuple(SHIFTS)), ("rotation", ("rotation",)), ("null", ()),
                            (["fog", "rotation"], ("rotation", "fog"))):
        assert shift_list(validate_config({**base, "shifts": value}, load_schema())["shifts"]) == expected


@pytest.mark.parametrize("value,needle", [("", "an empty path"), (" ", "an empty path"),
                                          ("res{ul}ts", "braces would be read as wildcards"), (None, "not a path")])
def test_output_dirs_are_non_empty_paths_without_braces(value, needle):
    import re

    for key in ("results_dir", "report_dir"):
        with pytest.raises(ConfigError, match=re.escape(f"config key {key!r} = {value!r}: {needle}")):
            validate_config({**base(), key: value}, SCHEMA)


def test_output_dirs_are_normalised_so_plan_and_rules_name_the_same_files():
    # "results/" would give the plan "results//runs/..." against the rules' "results/runs/...".
    wf = to_workflow_config(validate_config({**base(), "results_dir": "res/", "report_dir": "./rep/"}, SCHEMA))
    assert (wf.results_dir, wf.report_dir) == ("res", "rep")


@pytest.mark.parametrize("text,key", [
    ("seeds: [0]\nepochs: 1\nseeds: [1]\n", "seeds"),
    ("methods:\n  focal: [1.0]\n  label_smoothing: [0.1]\n  focal: [3.0]\n", "methods[focal]"),
    ("methods: {focal: [1.0], focal: [3.0]}\n", "methods[focal]"),
    ("ood:\n  fashion_mnist: digits\n  'fashion_mnist': mnist\n", "ood[fashion_mnist]"),
    ("shifts:\n  - {name: rotation, severities: [1], severities: [2]}\n", "shifts[0][severities]"),
])
def test_a_key_repeated_in_a_config_file_names_the_key_and_the_file(tmp_path, text, key):
    f = tmp_path / "mine.yaml"
    f.write_text(text)
    needle = re.escape(f"config key '{key}' in {f}: given twice in one mapping")
    with pytest.raises(ConfigError, match=needle):
        raw_yaml_texts([f])
    with pytest.raises(ConfigError, match=needle):  # validation says so too, whoever calls it
        validate_config({"seeds": [1]}, load_schema(), yaml_files=[f])


def test_a_yaml_merge_key_is_not_a_repeated_key(tmp_path):
    from lsbench.config import yaml_file_errors

    f = tmp_path / "mine.yaml"
    f.write_text("base: &b {x: 1}\nother: {<<: *b, x: 2}\ndata_root: here\n")
    assert yaml_file_errors([f]) == [] and raw_yaml_texts([f]) == {"data_root": "here"}


def test_paths_under_home_are_expanded_as_a_shell_would(monkeypatch, tmp_path):
    # Snakemake and the jobs' quoted arguments never expand "~": a folder named "~" appeared.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    wf = to_workflow_config(validate_config({**base(), "results_dir": "~/res/", "report_dir": "~/rep",
                                             "data_root": "~/data"}, SCHEMA))
    assert (wf.results_dir, wf.report_dir, wf.data_root) == (f"{tmp_path}/res", f"{tmp_path}/rep", f"{tmp_path}/data")
    with pytest.raises(ConfigError, match=r"config key 'results_dir' = '~no_such_user_lsb/res': ~no_such_user_lsb "
                                          "names no home folder here"):
        validate_config({**base(), "results_dir": "~no_such_user_lsb/res"}, SCHEMA)
