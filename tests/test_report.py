"""The report: rendered from the parquet tables alone, deterministic, escaped."""

import base64
import io
import re
import shutil
import subprocess

import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO
from lsbench.cli import main as cli_main
from lsbench.io import PROVENANCE, TABLES
from lsbench.provenance import cpu_model
from lsbench.report import SECTIONS, Tables, distinct, render


def test_same_tables_give_byte_identical_report(report_results, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert cli_main(["report", str(report_results), "-o", str(a)]) == 0
    assert cli_main(["report", str(report_results), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_report_needs_only_the_parquet_files(report_results, tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    for table in (*TABLES, PROVENANCE):
        shutil.copy(report_results / f"{table}.parquet", published)
    assert cli_main(["report", str(published), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    for column in ("ece_over", "ece_under", "ece_adaptive", "ece_classwise", "ece_ts"):
        assert f"<th>{column}</th>" in html


def test_strings_are_escaped(report_results):
    html = render(Tables.read(report_results), title='<script>alert("x")</script>')
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_missing_table_is_a_clear_error(report_results, tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 1
    assert "metrics.parquet" in capsys.readouterr().err


def test_provenance_comes_from_the_tables(report_results):
    env = pd.read_parquet(report_results / "environment.parquet")
    assert len(env) == 4 and (env["job_seconds"] > 0).all() and (env["resumed_after_epoch"] == 0).all()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert pd.read_parquet(report_results / "provenance.parquet").loc[0, "git_commit"].startswith(head)

    html = render(Tables.read(report_results))
    section = html[html.index('<section id="provenance">'):]
    assert head in section
    for text in (torch.__version__, env.loc[0, "data_sha256"], cpu_model(), "epochs: 2", "seeds:\n- 0\n- 1",
                 "snakemake", "torchvision", "pandas", "python", "total training time"):
        assert text in section, text
    # Provenance is what the tables say, not what the rendering machine has.
    tables = Tables.read(report_results)
    tables.environment["torch"] = "9.9.9-published"
    assert "9.9.9-published" in render(tables)


def test_distinct():
    assert distinct(pd.Series(["a", "a"])) == "a"
    assert distinct(pd.Series(["b", "a", "b"])) == "a (1 runs); b (2 runs)"


def test_sections_in_order(report_results):
    html = render(Tables.read(report_results))
    assert tuple(re.findall(r'<section id="([^"]+)"', html)) == SECTIONS


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_embedded_images_are_complete_pngs(report_results):
    """Chromium draws a truncated PNG partially (naturalWidth > 0), so check each one whole here."""
    pngs = embedded_pngs(render(Tables.read(report_results)))
    assert len(pngs) == 6
    for png in pngs:
        Image.open(io.BytesIO(png)).verify()  # chunk CRCs and the IEND chunk
        with Image.open(io.BytesIO(png)) as img:
            img.load()  # every row of pixels decompresses
            assert img.width > 100 and img.height > 100
    with pytest.raises((SyntaxError, OSError)):  # the check above can fail: a truncated PNG
        Image.open(io.BytesIO(pngs[0][:-200])).verify()
