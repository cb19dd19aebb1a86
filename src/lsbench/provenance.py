"""Where results came from: software versions, hardware, source commit, config.

Two records reach the report through parquet, so a published results directory carries its own
provenance: each training job writes one `environment` row (the process that produced the
numbers), and `collect` writes one `provenance` row for the workflow (config, git commit,
Snakemake version). These functions read the system; they are the I/O edge of provenance.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

import yaml

RUN_PACKAGES = ("torchvision", "numpy", "pandas", "pyarrow", "lsbench")


def lsbench_version() -> str:
    """The running code's version (lsbench.__version__, the one source), not the installed
    metadata's, which an editable install leaves stale until it is reinstalled."""
    from lsbench import __version__

    return __version__


def check_workflow_version(workflow_dir: str) -> None:
    """ConfigError when the lsbench that Python imports is not the version of the workflow in
    `workflow_dir` (a checkout's workflow/ folder, whose ../src/lsbench/__init__.py says its
    version): a project importing a workflow of one version with another installed would run the
    rules of one and the code of the other. Nothing to check for a remote workflow."""
    import re

    init = Path(workflow_dir).parent / "src" / "lsbench" / "__init__.py"
    try:
        found = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.M)
    except OSError:
        return
    from lsbench import __file__ as installed, __version__

    if found and found.group(1) != __version__:
        from lsbench.config import ConfigError

        raise ConfigError(f"the workflow in {workflow_dir} is lsbench {found.group(1)}, but Python imports lsbench "
                          f"{__version__} from {Path(installed).parent}: install the workflow's version (pip install "
                          f"-e '{Path(workflow_dir).parent}[train]', or lsbench[train]=={found.group(1)})")


def package_version(name: str) -> str:
    if name == "lsbench":
        return lsbench_version()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment(device: "torch.device", data_source: str) -> dict[str, object]:
    """One training process's environment; `job_seconds` is filled in when the job ends."""
    import torch  # only training jobs call this; the report path stays free of torch

    # torch.__version__ keeps the build tag (e.g. "+cu130") that the package metadata drops.
    return {"python": platform.python_version(), "torch": torch.__version__,
            **{name: package_version(name) for name in RUN_PACKAGES},
            "torch_cuda": torch.version.cuda or "none",
            "cpu_model": cpu_model(), "cpu_count": _cpu_count(), "torch_threads": torch.get_num_threads(),
            # The kernels torch dispatched to (DEFAULT, AVX2, AVX512, ...): another capability rounds
            # differently, and over thousands of steps that changes a run like another seed does.
            # ATEN_CPU_CAPABILITY, when set, is what forced it (e.g. avx2 on an AVX-512 CPU).
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_capability_forced": os.environ.get("ATEN_CPU_CAPABILITY", ""),
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "data_source": data_source}


def _cpu_count() -> int:
    """CPUs this process may run on (a SLURM allocation, taskset), not the machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def git_commit(source_dir: Path) -> str:
    """HEAD of the git checkout holding the workflow, "+dirty" when it has uncommitted changes.

    "unknown" outside a git checkout (e.g. a release tarball) or without git installed.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def workflow_provenance(config: dict | None, source_dir: Path | None) -> dict[str, str]:
    """The workflow-level row written by `collect`: config as YAML, commit, Snakemake version."""
    return {"config_yaml": "" if config is None else yaml.safe_dump(config, sort_keys=True),
            "git_commit": "unknown" if source_dir is None else git_commit(source_dir),
            "snakemake": package_version("snakemake"),
            "lsbench": lsbench_version()}
