"""lsbench as a user's project takes it: imported as a Snakemake module with a prefix (the
importing project's config only; every key it leaves out takes the schema's default), the same
under a storage provider (snakemake-storage-plugin-fs), and the workflow catalog's layout."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import HUNG_S, REPO
from lsbench.config import load_schema
from lsbench.tables import read_tables

TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def user_project(root: Path) -> Path:
    """A new directory with nothing of lsbench's but a Snakefile that imports it and a config with
    a few keys of the CI grid (.test/config/config.yaml, under the project's own key)."""
    (root / "config").mkdir(parents=True)
    grid = {k: v for k, v in yaml.safe_load(TEST_CONFIG.read_text()).items() if k not in ("results_dir", "report_dir")}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump({"label_smoothing": grid}))
    (root / "Snakefile").write_text(f'''configfile: "config/config.yaml"


module lsbench:
    snakefile:
        {str(REPO / "workflow" / "Snakefile")!r}
    config:
        config["label_smoothing"]
    prefix:
        "lsb"


use rule * from lsbench as lsbench_*
''')
    return root


def snakemake(project: Path, *args: str) -> subprocess.CompletedProcess:
    # Run in the project, as its user would: Snakemake finds the project's Snakefile there (and no
    # workflow profile: the project has none of lsbench's).
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                          capture_output=True, text=True, timeout=HUNG_S, cwd=project)


def check_results(results: Path, report: Path) -> None:
    tables = read_tables(results)
    assert len(tables.runs) == 4 and set(tables.shift["shift"]) == {"none", "contrast"}
    # What the project left out is the schema's default, recorded as such.
    recorded = yaml.safe_load(tables.provenance.loc[0, "config_yaml"])
    defaults = {k: spec["default"] for k, spec in load_schema()["properties"].items()}
    assert recorded["batch_size"] == defaults["batch_size"] == 64 and recorded["lr"] == defaults["lr"]
    assert recorded["datasets"] == ["digits"] and recorded["epochs"] == 1
    assert (report / "index.html").stat().st_size > 0 and (report / "findings.json").exists()


def test_module_import_with_a_prefix_runs_the_grid_under_it(tmp_path):
    project = user_project(tmp_path / "project")
    run = snakemake(project)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "localrules directive" not in run.stderr and "workflow specific profile" not in run.stderr
    # Every file under the prefix: nothing beside the project's own files and Snakemake's folder.
    assert sorted(p.name for p in project.iterdir()) == [".snakemake", "Snakefile", "config", "lsb"]
    check_results(project / "lsb" / "results", project / "lsb" / "report")
    rerun = snakemake(project, "-n")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]


def test_module_import_under_a_storage_provider_writes_only_to_storage(tmp_path):
    project, remote = user_project(tmp_path / "project"), tmp_path / "remote"
    remote.mkdir()
    storage = ["--default-storage-provider", "fs", "--default-storage-prefix", str(remote),
               "--shared-fs-usage", "none"]
    run = snakemake(project, *storage)
    assert run.returncode == 0, run.stderr[-4000:]
    # Outputs reach the storage only; the project folder keeps its own files and Snakemake's.
    assert sorted(p.name for p in project.iterdir()) == [".snakemake", "Snakefile", "config"]
    check_results(remote / "lsb" / "results", remote / "lsb" / "report")
    assert not list((remote / "lsb" / "results").rglob("checkpoint*"))
    rerun = snakemake(project, *storage, "-n")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]


def test_catalog_layout():
    for path in ("workflow/Snakefile", "workflow/schemas/config.schema.yaml", "workflow/envs/lsbench.yaml",
                 "config/config.yaml", "config/README.md", ".snakemake-workflow-catalog.yml",
                 ".test/config/config.yaml", "LICENSE"):
        assert (REPO / path).is_file(), path
    # The catalog reads workflow/Snakefile; the root's Snakefile (the design card's name) only includes it.
    root = [line for line in (REPO / "Snakefile").read_text().splitlines() if line and not line.startswith("#")]
    assert root[0] == 'include: "workflow/Snakefile"' and sum(line.startswith("rule ") for line in root) == 1
    assert {p.name for p in (REPO / "workflow" / "rules").glob("*.smk")} >= {"data.smk", "train.smk", "collect.smk"}
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True


def test_config_file_is_the_schema_defaults_and_every_key_is_documented():
    schema = load_schema()
    defaults = {k: spec["default"] for k, spec in schema["properties"].items()}
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text()) == defaults
    readme = (REPO / "config" / "README.md").read_text()
    missing = [k for k in schema["properties"] if f"`{k}`" not in readme]
    assert not missing, missing


def test_conda_env_pins_this_version():
    from lsbench import __version__

    env = yaml.safe_load((REPO / "workflow" / "envs" / "lsbench.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [f"lsbench[train]=={__version__}"]
    assert not any("-e" in line or ".." in line for line in pip)


def test_published_tables_carry_their_schema_version(tmp_path):
    import pyarrow.parquet as pq

    from lsbench import io

    df = pd.DataFrame({"a": [1]})
    io.write_parquet(df, tmp_path / "t.parquet")
    meta = pq.read_schema(tmp_path / "t.parquet").metadata
    assert meta[io.SCHEMA_VERSION_KEY] == str(io.SCHEMA_VERSION).encode()
    assert io.schema_version(tmp_path / "t.parquet")[0] == io.SCHEMA_VERSION
    df.to_parquet(tmp_path / "old.parquet")  # as lsbench before 0.3.0 wrote it
    assert io.schema_version(tmp_path / "old.parquet") == (1, "before 0.3.0")


def test_the_root_snakefile_and_config_are_the_workflows_own(tmp_path):
    """The design card's top-level Snakefile and config.yaml hold no second copy of anything: the
    Snakefile includes workflow/Snakefile, config.yaml links config/config.yaml, and a dry run from
    the root plans exactly the jobs of the catalog layout's Snakefile (plus the root's target)."""
    assert (REPO / "config.yaml").is_symlink() and (REPO / "config.yaml").resolve() == REPO / "config" / "config.yaml"
    from conftest import workflow_dir

    wd = workflow_dir(tmp_path / "wd", datasets=["digits"], models=["linear"], seeds=[0], epochs=1,
                      validation_size=0.1)

    def planned(snakefile: Path) -> dict[str, int]:
        run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(snakefile),
                              "--directory", str(wd)], capture_output=True, text=True, timeout=HUNG_S)
        assert run.returncode == 0, run.stdout + run.stderr
        jobs = (re.match(r"^(\w+)\s+(\d+)$", line.strip()) for line in run.stdout.splitlines())
        return {m.group(1): int(m.group(2)) for m in jobs if m and m.group(1) != "total"}

    root, catalog = planned(REPO / "Snakefile"), planned(REPO / "workflow" / "Snakefile")
    assert root.pop("default") == 1 and catalog.pop("all") == 1
    assert root == catalog and catalog["train"] >= 1
