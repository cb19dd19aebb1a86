"""Regenerating a published report needs no training stack: `lsbench report` in a fresh virtual
environment that has lsbench's base install (no `train` extra) and therefore no torch. The install
is the way a node without the repository gets lsbench (README, "Software on the nodes"): a wheel
built from this checkout, resolved by its pinned version from a folder of wheels."""

import subprocess
import sys

import pytest

from conftest import HUNG_S, REPO


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    from lsbench import __version__

    root = tmp_path_factory.mktemp("venv") / "env"
    wheels = root.parent / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                         capture_output=True, text=True, timeout=HUNG_S)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=HUNG_S)
    # The base install by its pinned version, as the rules' conda env asks for it (with the train
    # extra there); pip's cache serves the dependencies CI already fetched for the main environment.
    run = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "--find-links", str(wheels), f"lsbench=={__version__}"],
                         capture_output=True, text=True, timeout=HUNG_S, cwd=root.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root


def test_the_installed_command_reports_its_version_anywhere(venv, tmp_path):
    from lsbench import __version__

    run = subprocess.run([str(venv / "bin" / "lsbench"), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == f"lsbench {__version__}", run.stdout + run.stderr


def test_train_on_the_base_install_says_what_to_install(venv, tiny_dataset_file, tmp_path):
    run = subprocess.run([str(venv / "bin" / "lsbench"), "train", "--dataset", "fashion_mnist", "--model", "mlp",
                          "--data", str(tiny_dataset_file), "--out-dir", str(tmp_path / "run"), "--seed", "0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=HUNG_S)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "needs torch" in run.stderr and "pip install 'lsbench[train]'" in run.stderr, run.stderr


def test_the_base_install_has_no_torch(venv):
    run = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert run.returncode != 0 and "No module named 'torch'" in run.stderr


def test_report_renders_without_torch(venv, report_results, tmp_path):
    out = tmp_path / "published" / "index.html"
    script = ("import sys; from lsbench.cli import main; code = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", script, "report", str(report_results), "-o", str(out)],
                         capture_output=True, text=True, timeout=HUNG_S, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    html = out.read_text()
    for section in ('id="findings"', 'id="studies"', 'id="selective"', 'id="ood"', 'id="provenance"'):
        assert section in html
    assert (out.parent / "findings.json").exists()
