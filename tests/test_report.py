"""The report: rendered from the parquet tables alone, deterministic, escaped."""

from pathlib import Path

import pytest

from lsbench.cli import main as cli_main
from lsbench.config import TrainConfig
from lsbench.pipeline import collect, train_one
from lsbench.report import Tables, render


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    from conftest import write_tiny_idx
    from lsbench.pipeline import prepare_data

    root = tmp_path_factory.mktemp("report")
    data = root / "data.pt"
    prepare_data(str(write_tiny_idx(root / "idx")), data, lambda m: None)
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", validation_size=32)
    runs = []
    for seed in (0, 1):
        for eps in (0.0, 0.3):
            runs.append(root / f"runs/s{seed}e{eps}")
            train_one(data, runs[-1], seed, eps, cfg, False, lambda m: None)
    collect(runs, root / "results", lambda m: None)
    return root / "results"


def test_same_tables_give_byte_identical_report(results_dir, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert cli_main(["report", str(results_dir), "-o", str(a)]) == 0
    assert cli_main(["report", str(results_dir), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_report_needs_only_the_parquet_files(results_dir, tmp_path):
    import shutil

    published = tmp_path / "published"
    published.mkdir()
    for table in ("metrics", "reliability", "predictions", "calibrated"):
        shutil.copy(results_dir / f"{table}.parquet", published)
    assert cli_main(["report", str(published), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    for column in ("ece_over", "ece_under", "ece_adaptive", "ece_classwise", "ece_ts"):
        assert f"<th>{column}</th>" in html


def test_strings_are_escaped(results_dir):
    html = render(Tables.read(results_dir), title='<script>alert("x")</script>')
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_missing_table_is_a_clear_error(results_dir, tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 1
    assert "metrics.parquet" in capsys.readouterr().err
