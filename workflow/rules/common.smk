import json
import shlex

from lsbench.config import format_epsilon


# A seed is digits; an epsilon is a float's repr ("0.05", "1e-05"): neither can swallow a "/".
wildcard_constraints:
    seed=r"\d+",
    eps=r"\d[0-9.e-]*",


def get_run_dir(seed, eps):
    return f"results/runs/seed{seed}/eps{eps}"


def get_run_dirs(lsb):
    return [get_run_dir(s, format_epsilon(e)) for s in lsb.seeds for e in lsb.epsilons]


def get_run_tables(lsb, table):
    return [f"{d}/{table}.parquet" for d in get_run_dirs(lsb)]


def get_wildcard_run_dir(wildcards):
    return get_run_dir(wildcards.seed, wildcards.eps)


def get_data_dir_arg(lsb):
    return "" if lsb.data_dir is None else f"--data-dir {shlex.quote(lsb.data_dir)}"


def get_train_mem_mb(lsb):
    # Measured peak RSS of one train job: 924 MiB on CPU, 1257 MiB with a CUDA context.
    return 3000 if lsb.train.device == "cuda" else 1500


def get_train_runtime(lsb):
    # Minutes. About 4 s per epoch measured on one core; one minute per epoch leaves room for slow nodes.
    return 10 + lsb.train.epochs


def get_train_gpus(lsb):
    # The SLURM plugin turns `gpu: 1` into `--gpus=1`.
    return 1 if lsb.train.device == "cuda" else 0


def get_config_json(config):
    # The validated config (defaults filled in) as one line, recorded by collect for the report.
    return json.dumps(config, sort_keys=True)
