import functools
import json
import shlex

from lsbench.config import format_epsilon, model_from_slug, model_slug
from lsbench.data import files_sha256
from lsbench.datasets import get_dataset, source_files


# A dataset is a registry name; a model slug has no "/" (see lsbench.config.model_slug); a seed is
# digits; an epsilon is a float's repr ("0.05", "1e-05").
wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    model=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    eps=r"\d[0-9.e-]*",


class Untracked:
    """A param whose change must rerun nothing: train's options that choose how a run executes,
    not what it computes (device, keeping the checkpoint), and the config that collect records
    (a change that matters reruns training, and so collect through its inputs). Snakemake's params
    trigger records only values of builtin types, so it skips these; they still reach the shell
    command through str()."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def get_run_dir(dataset, model, seed, eps):
    return f"results/runs/{dataset}/{model_slug(model)}/seed{seed}/eps{eps}"


def get_run_dirs(lsb):
    return [
        get_run_dir(d, m, s, format_epsilon(e))
        for d in lsb.datasets
        for m in lsb.models
        for s in lsb.seeds
        for e in lsb.epsilons
    ]


def get_run_tables(lsb, table):
    return [f"{d}/{table}.parquet" for d in get_run_dirs(lsb)]


def get_wildcard_run_dir(wildcards):
    return get_run_dir(
        wildcards.dataset,
        model_from_slug(wildcards.model),
        wildcards.seed,
        wildcards.eps,
    )


def get_model_name(wildcards):
    return model_from_slug(wildcards.model)


def get_validation_size(lsb):
    def validation_size(wildcards):
        return lsb.validation_sizes.get(wildcards.dataset, 0)

    return validation_size


@functools.lru_cache(maxsize=None)
def get_source_files(dataset, data_root):
    return [str(p) for p in source_files(get_dataset(dataset), data_root)]


def get_data_inputs(lsb):
    def data_inputs(wildcards):
        return get_source_files(wildcards.dataset, lsb.data_root)

    return data_inputs


@functools.lru_cache(maxsize=None)
def _fingerprint(dataset, data_root):
    return files_sha256(get_source_files(dataset, data_root))


def get_data_fingerprint(lsb):
    # Content, not modification time: data replaced at the same path (even by an older file) reruns.
    def fingerprint(wildcards):
        return _fingerprint(wildcards.dataset, lsb.data_root)

    return fingerprint


def get_train_inputs(lsb):
    # The dataset's cache, and its OOD set's when it has one.
    def train_inputs(wildcards):
        ood = lsb.ood_set(wildcards.dataset)
        data = {"data": f"results/data/{wildcards.dataset}.npz"}
        return {**data, "ood": f"results/data/{ood}.npz"} if ood else data

    return train_inputs


def get_ood_args(lsb):
    def ood_args(wildcards):
        ood = lsb.ood_set(wildcards.dataset)
        return f"--ood-set {ood} --ood-data results/data/{ood}.npz" if ood else ""

    return ood_args


def get_data_summaries(lsb):
    # Every dataset a run reads: the grid's and their OOD sets.
    names = set(lsb.datasets) | {lsb.ood_set(d) for d in lsb.datasets if lsb.ood_set(d)}
    return [f"results/data/{d}.json" for d in sorted(names)]


def get_data_root_arg(lsb):
    # Untracked: a dataset read from data_root reruns when its files move or change (the input and
    # fingerprint triggers); one that is not (digits, a Debian copy) must not rerun for a new root.
    return Untracked(
        "" if lsb.data_root is None else f"--data-root {shlex.quote(lsb.data_root)}"
    )


def get_execution_options(lsb):
    keep = " --keep-checkpoint" if lsb.keep_checkpoints else ""
    return Untracked(f"--device {lsb.train.device}{keep}")


# Minutes per epoch on one slow CPU core for 60000 28x28 images, by model (user models: like resnet20).
EPOCH_MINUTES = {"linear": 0.5, "mlp": 1, "lenet": 2, "resnet20": 20}


def get_train_runtime(lsb):
    def runtime(wildcards):
        spec = get_dataset(wildcards.dataset)
        size = (
            spec.sizes[0]
            * spec.image_shape[0]
            * spec.image_shape[1]
            * spec.image_shape[2]
        )
        per_epoch = (
            EPOCH_MINUTES.get(model_from_slug(wildcards.model), 20)
            * size
            / (60000 * 784)
        )
        return int(10 + lsb.train.epochs * max(per_epoch, 0.1))

    return runtime


def get_train_mem_mb(lsb):
    # Measured peak RSS of an MLP job on Fashion-MNIST: 924 MiB on CPU, 1257 MiB with a CUDA
    # context; most of it torch and the float32 copy of the images, which grows with the dataset.
    def mem_mb(wildcards):
        spec = get_dataset(wildcards.dataset)
        floats = (
            sum(spec.sizes)
            * spec.image_shape[0]
            * spec.image_shape[1]
            * spec.image_shape[2]
        )
        cpu = max(1500, 1000 + 1.5 * 4 * floats / 2**20)  # 1500 for every 28x28 set
        return int(cpu + (1500 if lsb.train.device == "cuda" else 0))

    return mem_mb


def get_train_gpus(lsb):
    # The SLURM plugin turns `gpu: 1` into `--gpus=1`.
    return 1 if lsb.train.device == "cuda" else 0


def get_config_json(config):
    # The validated config (defaults filled in) as one line: collect checks the runs against it
    # and records it for the report.
    return Untracked(json.dumps(config, sort_keys=True))
