"""collect and report on large grids: the per-image tables (predictions, ood_predictions) are
written and read one run at a time, never whole; the figures may draw on a sample of each run's
images, every number in a table or finding stays the one of all of them."""

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lsbench import io
from lsbench import tables as tables_module
from lsbench.cli import main as cli_main
from lsbench.pipeline import collect
from lsbench.report import write_report
from lsbench.tables import read_tables
from synthetic import make_tables, write_tables


def write_run_dirs(tables, root: Path) -> list[Path]:
    """Each run of `tables` as a run directory, as `lsbench train` leaves it."""
    dirs = []
    for key, _ in tables.runs.groupby(io.KEY, sort=False):
        d = root / "-".join(map(str, key))
        for name in io.TABLES:
            df = getattr(tables, name)
            io.write_parquet(df[(df[io.KEY] == pd.Series(key, index=io.KEY)).all(axis=1)], d / f"{name}.parquet")
        dirs.append(d)
    return dirs


@pytest.fixture
def run_dirs(tmp_path):
    # Two studies with different class counts; the digits runs have no OOD set (empty OOD tables).
    four = make_tables(seeds=(0, 1), epsilons=(0.0, 0.2), num_classes=4)
    three = make_tables(seeds=(1, 0), epsilons=(0.1, 0.0), num_classes=3, studies=(("digits", "mlp"),))
    dirs = write_run_dirs(four, tmp_path / "runs") + write_run_dirs(three, tmp_path / "runs")
    return dirs[::-1]  # not in key order


def refuse_whole_reads(monkeypatch):
    """Make pandas refuse to read a per-image table whole (as collect's concat and the report did)."""
    read = pd.read_parquet

    def one_run_at_a_time(path, *args, **kwargs):
        if Path(path).name in {f"{t}.parquet" for t in io.PER_IMAGE_TABLES} and Path(path).parent.name == "results":
            raise AssertionError(f"{path} read whole")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", one_run_at_a_time)


def test_collect_streams_the_per_image_tables_in_the_order_and_types_of_a_concatenation(run_dirs, tmp_path):
    out = tmp_path / "results"
    collect(run_dirs, out, log=lambda line: None)
    for name in io.PER_IMAGE_TABLES:
        whole = io.concat_parquet([io.run_paths(d)[name] for d in run_dirs])
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), whole)
        assert io.schema_version(out / f"{name}.parquet")[0] == io.SCHEMA_VERSION
    # One row group per run: a reader can take one run at a time.
    assert pq.ParquetFile(out / "predictions.parquet").num_row_groups == len(run_dirs)
    assert pq.ParquetFile(out / "ood_predictions.parquet").num_row_groups == 4  # the fashion_mnist runs


def test_report_reads_the_per_image_tables_one_run_at_a_time(run_dirs, tmp_path, monkeypatch):
    collect(run_dirs, tmp_path / "results", log=lambda line: None)
    whole = pd.read_parquet(tmp_path / "results" / "predictions.parquet")
    refuse_whole_reads(monkeypatch)
    tables = read_tables(tmp_path / "results")
    pd.testing.assert_frame_equal(tables.predictions, whole)  # below FIGURE_ROWS: every row
    write_report(tmp_path / "results", tmp_path / "report" / "index.html")


def report_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.parent.name != "figures" and p.suffix != ".html"}


def test_a_sampled_report_has_the_same_findings_and_tables(tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_tables(make_tables(seeds=range(3), n_test=180), results)
    write_report(results, tmp_path / "all" / "index.html")
    monkeypatch.setattr(tables_module, "FIGURE_ROWS", 200)  # of 1,080 rows: every 6th image and the last
    sample = read_tables(results).predictions
    per_run = sample.groupby(io.KEY)["index"]
    assert len(sample) < 1080 and (per_run.min() == 0).all() and (per_run.max() == 179).all()
    write_report(results, tmp_path / "sampled" / "index.html")
    same = report_files(tmp_path / "all")
    assert "findings.json" in same and any(name.endswith(".csv") for name in same)
    assert report_files(tmp_path / "sampled") == same
    html = (tmp_path / "sampled" / "index.html").read_text()
    assert "show a sample of each run" in html and "of its 1,080 test predictions" in html
    assert "show a sample" not in (tmp_path / "all" / "index.html").read_text()
    assert json.loads((tmp_path / "sampled" / "findings.json").read_text())["findings"]


def test_a_run_whose_rows_are_not_together_is_refused_in_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    write_tables(make_tables(), results)
    df = pd.read_parquet(results / "predictions.parquet")
    moved = df["index"] == 0
    pd.concat([df[~moved], df[moved]]).to_parquet(results / "predictions.parquet", index=False)
    assert cli_main(["report", str(results), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert "predictions.parquet: the rows of run" in err and "are not together" in err and "\n" not in err
