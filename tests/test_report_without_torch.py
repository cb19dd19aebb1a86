"""Regenerating a published report needs no training stack: `lsbench report` in a fresh virtual
environment that has lsbench's base install (no `train` extra) and therefore no torch."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    # A non-editable install of this checkout with its base dependencies only (pip's cache serves
    # the wheels CI already fetched for the main environment).
    run = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(REPO)], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root


def test_the_base_install_has_no_torch(venv):
    run = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert run.returncode != 0 and "No module named 'torch'" in run.stderr


def test_report_renders_without_torch(venv, report_results, tmp_path):
    out = tmp_path / "published" / "index.html"
    script = ("import sys; from lsbench.cli import main; code = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", script, "report", str(report_results), "-o", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    html = out.read_text()
    for section in ('id="findings"', 'id="studies"', 'id="selective"', 'id="ood"', 'id="provenance"'):
        assert section in html
    assert (out.parent / "findings.json").exists()
