import json
import os
import re
import shlex

from lsbench.config import model_from_slug, or_exit
from lsbench.datasets import DATASETS, get_dataset
from lsbench.methods import METHODS, PARAM_PATTERN
from lsbench.plan import WorkflowPlan, under
from snakemake.sourcecache import LocalSourceFile


def one_of(names):
    # A wildcard that matches exactly a registry's names.
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# A dataset and a method are registry names; a model slug has no "/" (see
# lsbench.config.model_slug); a definition and a data fingerprint are hex digests (lsbench.plan);
# a seed is digits; a parameter is a float's repr ("0.05", "1e-05", "-0.5": lsbench.methods).
wildcard_constraints:
    dataset=one_of(DATASETS),
    model=r"[A-Za-z0-9_.\-]+",
    definition=r"[0-9a-f]{16}",
    fingerprint=r"[0-9a-f]{16}",
    seed=r"\d+",
    method=one_of(METHODS),
    param=PARAM_PATTERN,
    suite=r"[0-9a-f]{16}",


# One run's directory under results_dir, as lsbench.plan.run_dir writes it, and its shift
# evaluation's (lsbench.plan.shift_table): the same run key under shift/.
RUN_KEY = "{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}"
RUN = f"runs/{RUN_KEY}"


def results_path(path):
    # A file under the config's results_dir; the config forbids braces in it, so the only
    # wildcards are the rule's own. Spelled as lsbench.plan spells its inputs ("runs/x" when
    # results_dir is ".").
    return under(LSB.results_dir, path)


def report_path(path):
    return under(LSB.report_dir, path)


# The rules' conda env, beside this folder (a local checkout, or a remote module's source).
ENV_FILE = workflow.current_basedir.join("../envs/lsbench.yaml")


def get_conda_env(wildcards):
    # Snakemake formats the env file's path with the job's wildcards, so braces in a local
    # checkout's path ("re{p}o") are doubled to survive.
    if isinstance(ENV_FILE, LocalSourceFile):
        path = ENV_FILE.get_path_or_uri(secret_free=True)
        return path.replace("{", "{{").replace("}", "}}")
    return ENV_FILE


class Untracked:
    """A param whose change must rerun nothing: train's options that choose how a run executes,
    not what it computes (device, keeping the checkpoint), what collect records or checks (a
    change that matters changes a run's path, and so collect's inputs), and any path, which
    Snakemake would otherwise expand as a pattern (a folder named "d{a}ta"). Snakemake's params
    trigger records only values of builtin types, so it skips these; they still reach the shell
    command through str()."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def get_plan(lsb):
    # Every run's definition and path, the data fingerprinted and the models' code hashed once:
    # a dataset that is not where data_root says, or a model that cannot be found, stops here.
    # A training job's path lacks the Snakefile's folder, which Snakemake puts on its own.
    return or_exit(WorkflowPlan, lsb, hidden_paths=(workflow.basedir,))


def get_run_tables(plan, table):
    return [f"{run.run_dir}/{table}.parquet" for run in plan.runs]


def get_model_name(wildcards):
    return model_from_slug(wildcards.model)


def get_validation_size(lsb):
    def validation_size(wildcards):
        return lsb.validation_sizes.get(wildcards.dataset, 0)

    return validation_size


def get_train_inputs(plan):
    # The dataset's cache, and its OOD set's when it has one (else an empty list: `--ood-data=`).
    def train_inputs(wildcards):
        ood = plan.wf.ood_set(wildcards.dataset)
        return {
            "data": plan.data_cache(wildcards.dataset),
            "ood": plan.data_cache(ood) if ood else [],
        }

    return train_inputs


def get_ood_set(plan):
    def ood_set(wildcards):
        return plan.wf.ood_set(wildcards.dataset) or ""

    return ood_set


def get_data_root_arg(lsb):
    # Untracked: the data's content is in the cache's path (its fingerprint), so another path to
    # the same files (relative or absolute, a copy) reruns nothing.
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


def get_gpu_resources(lsb):
    # `gpu` only for a job that uses one: the Kubernetes executor refuses `gpu` without
    # `gpu_manufacturer`, even gpu=0. With device cuda each train job asks for one GPU, which the
    # SLURM plugin submits as `--gpus=1` (its own allocation: CUDA_VISIBLE_DEVICES names that GPU).
    return {"gpu": 1} if lsb.train.device == "cuda" else {}


def get_train_group(lsb):
    # CPU train jobs go 4 to an sbatch submission (profiles/slurm); a group asks for the sum of its
    # jobs' resources and does not bind its jobs to separate GPUs, so GPU jobs are not grouped.
    return None if lsb.train.device == "cuda" else "train"


def get_shift_inputs(plan):
    # One run's final model and clean tables (its temperature, and its predictions, which the
    # rebuilt model's clean logits must reproduce), its dataset's cache and shifted test set.
    def shift_inputs(wildcards):
        run = results_path(RUN.format(**wildcards))
        return {
            "model": f"{run}/model.pt",
            "calibrated": f"{run}/calibrated.parquet",
            "predictions": f"{run}/predictions.parquet",
            "runs": f"{run}/runs.parquet",
            "data": plan.data_cache(wildcards.dataset),
            "shifted": plan.shifted_data(wildcards.dataset),
        }

    return shift_inputs


def get_shift_data_mem_mb(lsb):
    # The float64 copy of the subset a few times over (the fog's fractals are twice its side), and
    # the shifted images themselves: 5 severities of every shift in uint8.
    def mem_mb(wildcards):
        c, h, w = get_dataset(wildcards.dataset).image_shape
        n = min(lsb.shift_images, sum(get_dataset(wildcards.dataset).sizes[1:]))
        return int(800 + (40 * 8 + 5 * len(lsb.shifts)) * n * c * h * w / 2**20)

    return mem_mb


def get_shifted_data(plan):
    # Every dataset's shifted test set: none when shifts are off.
    return [plan.shifted_data(d) for d in plan.wf.datasets] if plan.wf.shifts else []


def get_shift_collect_outputs(plan):
    if not plan.wf.shifts:
        return {}
    return {
        "shift": results_path("shift.parquet"),
        "shift_gallery": results_path("shift_gallery.parquet"),
    }


def get_collect_args(config, plan, source_dir):
    # The validated config (defaults filled in), the model code the runs must have used and the
    # checkout whose commit is recorded: collect checks the runs against them and records them.
    return Untracked(
        " ".join(
            [
                f"--config-json {shlex.quote(json.dumps(config, sort_keys=True))}",
                f"--model-code-json {shlex.quote(json.dumps(plan.model_sha256))}",
                f"--source-dir {shlex.quote(str(source_dir))}",
            ]
        )
    )
