"""The report: rendered from the parquet tables alone, deterministic, escaped."""

import base64
import dataclasses
import html as html_module
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO
from lsbench.cli import main as cli_main
from lsbench.io import OPTIONAL_PUBLISHED, PUBLISHED
from lsbench.provenance import cpu_model
from lsbench.report import distinct, render, section_ids
from lsbench.tables import read_tables


def test_same_tables_give_byte_identical_report(report_results, tmp_path):
    a, b = tmp_path / "a" / "index.html", tmp_path / "b" / "report.html"
    assert cli_main(["report", str(report_results), "-o", str(a)]) == 0
    assert cli_main(["report", str(report_results), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    # findings.json lands next to the HTML file, and is as reproducible.
    fa, fb = a.with_name("findings.json"), b.with_name("findings.json")
    assert fa.read_bytes() == fb.read_bytes()
    document = json.loads(fa.read_text())
    assert document["schema_version"] == 2 and document["metadata"]["correction"]["method"] == "holm"
    meta = document["metadata"]
    assert meta["seeds"] == [0, 1] and len(meta["config_sha256"]) == 64 and meta["lsbench"]
    assert meta["cpu_capabilities"] == [torch.backends.cpu.get_cpu_capability()]
    records = document["findings"]
    assert records[0]["id"] == "answer" and records[0]["sentences"]
    tested = [r for r in records if r.get("test") == "paired t-test"]
    assert tested and {"id", "text", "estimate", "low", "high", "p", "p_holm", "family_size", "metric",
                       "direction", "epochs_checked", "holds_over_epochs"} <= set(tested[0])
    assert set(meta["correction"]["family_sizes"].values()) == {tested[0]["family_size"]}
    chosen = [r for r in records if r["id"] == "method_setting"]
    assert len(chosen) == 1 and chosen[0]["setting_of"] == "label_smoothing" and chosen[0]["candidates"] == 2
    html = a.read_text()
    for record in records:  # every finding is on the page
        assert html_escape(record["text"].split(": ", 1)[1]) in html


def test_report_needs_only_the_parquet_files(report_results, tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    for table in (*PUBLISHED, *OPTIONAL_PUBLISHED):
        shutil.copy(report_results / f"{table}.parquet", published)
    assert cli_main(["report", str(published), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    for column in ("ece_over", "ece_under", "ece_adaptive", "ece_classwise", "ece_ts"):
        assert f"<th>{column}</th>" in html
    assert "<caption>ECE under shift (pooled over the shifts)" in html


def test_strings_are_escaped(report_results):
    html = render(read_tables(report_results), title='<script>alert("x")</script>')
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def html_escape(text: str) -> str:
    return html_module.escape(text, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")


def test_missing_table_is_a_clear_error(report_results, tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 1
    assert "runs.parquet: missing" in capsys.readouterr().err


def test_provenance_comes_from_the_tables(report_results):
    env = pd.read_parquet(report_results / "environment.parquet")
    assert len(env) == 4 and (env["job_seconds"] > 0).all() and (env["resumed_after_epoch"] == 0).all()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert pd.read_parquet(report_results / "provenance.parquet").loc[0, "git_commit"].startswith(head)

    html = render(read_tables(report_results))
    section = html[html.index('<section id="provenance">'):]
    assert head in section
    sha = pd.read_parquet(report_results / "runs.parquet").loc[0, "data_sha256"]
    assert set(env["cpu_capability"]) == {torch.backends.cpu.get_cpu_capability()}
    for text in (torch.__version__, sha, cpu_model(), torch.backends.cpu.get_cpu_capability(), "epochs: 2", "seeds:\n- 0\n- 1",
                 "snakemake", "torchvision", "pandas", "python", "total training time"):
        assert text in section, text
    # Provenance is what the tables say, not what the rendering machine has.
    tables = read_tables(report_results)
    tables.environment["torch"] = "9.9.9-published"
    assert "9.9.9-published" in render(tables)
    # A forced capability is shown with what forced it; tables without the column say so.
    tables.environment["cpu_capability"], tables.environment["cpu_capability_forced"] = "AVX2", "avx2"
    assert "AVX2 (ATEN_CPU_CAPABILITY=avx2)" in render(tables)
    old = tables.environment.drop(columns=["cpu_capability", "cpu_capability_forced"])
    assert "not recorded" in render(dataclasses.replace(tables, environment=old))


def test_distinct():
    assert distinct(pd.Series(["a", "a"])) == "a"
    assert distinct(pd.Series(["b", "a", "b"])) == "a (1 runs); b (2 runs)"


def test_sections_in_order(report_results):
    tables = read_tables(report_results)
    html = render(tables)
    assert tuple(re.findall(r'<section id="([^"]+)"', html)) == section_ids(tables)
    assert section_ids(tables)[:8] == ("answer", "findings", "studies", "selective", "ood", "shift",
                                       "study-fashion_mnist-mlp", "fashion_mnist-mlp-methods")
    # The table of contents follows the answer and links every section, each study's nested in it.
    nav = html[html.index('<nav id="contents"'):html.index("</nav>")]
    assert html.index('<section id="answer">') < html.index('<nav id="contents"') < html.index('<section id="findings">')
    assert re.findall(r'href="#([^"]+)"', nav) == list(section_ids(tables))
    assert '<li><a href="#study-fashion_mnist-mlp">' in nav and "<ol><li><a href=\"#fashion_mnist-mlp-methods\">" in nav


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_embedded_images_are_complete_pngs(report_results):
    """Chromium draws a truncated PNG partially (naturalWidth > 0), so check each one whole here."""
    pngs = embedded_pngs(render(read_tables(report_results)))
    assert len(pngs) == 12  # 7 per study (methods, headline, ...), risk-coverage, OOD, 3 of the shifts
    for png in pngs:
        Image.open(io.BytesIO(png)).verify()  # chunk CRCs and the IEND chunk
        with Image.open(io.BytesIO(png)) as img:
            img.load()  # every row of pixels decompresses
            assert img.width > 100 and img.height > 100
    with pytest.raises((SyntaxError, OSError)):  # the check above can fail: a truncated PNG
        Image.open(io.BytesIO(pngs[0][:-200])).verify()


def test_one_section_per_study_and_a_cross_study_table(report_tables):
    studies = (("digits", "lenet"), ("digits", "mlp"), ("fashion_mnist", "my_pkg.nets:tiny"))
    tables = report_tables(seeds=range(3), epsilons=(0.0, 0.1, 0.2), studies=studies)
    html = render(tables)
    ids = section_ids(tables)
    assert tuple(re.findall(r'<section id="([^"]+)"', html)) == ids
    assert [i for i in ids if i.startswith("study-")] == [
        "study-digits-lenet", "study-digits-mlp", "study-fashion_mnist-my_pkg.nets-tiny"]
    table = html.split('id="studies"')[1].split("</section>")[0]
    rows = table.split("<tr>")[2:]
    assert len(rows) == 3 and "scikit-learn digits (8×8) × lenet" in rows[0]
    assert "Fashion-MNIST × my_pkg.nets:tiny" in rows[2]
    # Synthetic runs sharpen less as eps grows (sharpness 2 - 4 eps): the row's numbers are the tables'.
    from lsbench.report import split_studies, study_row

    row = study_row(split_studies(tables)[0])
    final = tables.metrics[(tables.metrics["dataset"] == "digits") & (tables.metrics["model"] == "lenet")
                           & (tables.metrics["epoch"] == 2)]
    best = final.groupby("param")["ece"].mean().idxmin()
    label = "cross-entropy" if best == 0 else f"label smoothing ε = {float(best)!r}"
    assert row["best"] == label and row["baseline"] == "cross-entropy"
    assert row["ece"].mean == pytest.approx(final.loc[final["param"] == 0.0, "ece"].mean())
    assert row["ece"].n == 3 and row["ece_ts"] is not None and row["temperature"].n == 3
    assert f"<td>{label}</td>" in rows[0]


def test_a_report_where_every_run_diverged_says_so(report_tables):
    tables = report_tables(seeds=(0, 1), epsilons=(0.0, 0.2), diverged={(0, 0.0), (1, 0.0), (0, 0.2), (1, 0.2)})
    html = render(tables)
    assert "Every run diverged" in html and "Every run of this study diverged" in html
    assert html.count("non-finite training loss") == 4
    assert tuple(re.findall(r'<section id="([^"]+)"', html)) == section_ids(tables)


def test_report_into_a_directory_is_one_line(report_results, tmp_path, capsys):
    (tmp_path / "somedir").mkdir()
    assert cli_main(["report", str(report_results), "-o", str(tmp_path / "somedir") + "/"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "somedir: names a directory" in err and "Traceback" not in err
    # A directory that does not exist yet, named with its slash: no file of that name appears.
    assert cli_main(["report", str(report_results), "-o", str(tmp_path / "newdir") + "/"]) == 1
    assert "newdir: names a directory" in capsys.readouterr().err and not (tmp_path / "newdir").exists()


def test_a_report_named_like_the_findings_is_refused(report_results, tmp_path, capsys):
    out = tmp_path / "findings.json"
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "give the report another name" in err and "Traceback" not in err and not out.exists()


def test_paper_files_hold_what_the_page_shows_and_spare_other_files(report_results, tmp_path):
    import csv

    out = tmp_path / "paper" / "index.html"
    (tmp_path / "paper" / "figures").mkdir(parents=True)
    (tmp_path / "paper" / "figures" / "my-own.svg").write_text("<svg/>")  # a paper's own figure
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 0
    html = out.read_text()
    tables, figures = out.parent / "tables", out.parent / "figures"
    for name in re.findall(r'href="(tables/[^"]+|figures/[^"]+)"', html):
        assert (out.parent / name).is_file(), name  # every file the page names exists
    assert (figures / "my-own.svg").read_text() == "<svg/>"
    stems = {p.stem for p in figures.glob("*.pdf")}
    assert stems == {*(f"fashion_mnist-mlp-{part}" for part in ("methods", "headline", "confidence", "vs-param", "curves",
                                                                "reliability", "sample", "selective", "ood",
                                                                "shift-severity", "shift-heatmap")),
                     "fashion_mnist-shift-gallery"}, stems
    # The CSV of a table is its text on the page: p-values as shown (never re-rounded to 0.000000).
    paired = next(tables.glob("*paired-difference*.csv"))
    rows = list(csv.reader(paired.open()))
    assert rows[0][:3] == ["method", "n", "Δ accuracy"] and rows[0].count("p (t)") > 1  # no ".1" suffixes
    text = " ".join(html_module.unescape(re.sub(r"<[^>]+>", "", html.replace("<br>", " "))).split())
    for row in rows[1:]:
        for cell in row[2:]:
            assert cell in text, cell
    tex = paired.with_suffix(".tex").read_text()
    assert "\\toprule" in tex and "ε" not in tex and "$\\varepsilon$" in tex and "Δ" not in tex
    # A rerun that writes fewer files removes only the ones lsbench wrote.
    (figures / "stale-old.svg").write_text("x")
    manifest = (figures / ".lsbench-report-files").read_text()
    (figures / ".lsbench-report-files").write_text(manifest + "stale-old.svg\n")
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 0
    assert not (figures / "stale-old.svg").exists() and (figures / "my-own.svg").exists()


def test_the_shift_section_and_findings(report_results):
    """Three shifts on 40 images (tests/conftest.py): the section's tables and figures, the shift
    findings in a Holm family of their own, so the clean-data findings are those of the same
    tables without shifts."""
    from lsbench.report import findings, findings_document

    tables = read_tables(report_results)
    html = render(tables)
    section = html[html.index('<section id="shift">'):]
    section = section[:section.index("</section>")]
    for caption in ("ECE under shift", "ECE after temperature scaling fitted on clean images, under shift",
                    "Accuracy under shift"):
        assert f"<caption>{caption}" in section
    assert section.count("<img ") == 3 and "3 shifts, 40 test images each" in section
    found = findings(tables)
    shift = [f for f in found if f.get("family") == "shift"]
    assert [f["id"] for f in shift] == ["shift_pooled", "shift_ece", "shift_vs_temperature_scaling", "shift_temperature_scaling",
                                        "shift_temperature_scaling", "shift_aurc_penalty", "shift_breaks"]
    ece = shift[1]
    assert sorted(shift[0]["by_run"]["cross-entropy"]) == ["0", "1", "2", "3", "4", "5"]
    assert sorted(ece["by_severity"]) == ["1", "2", "3", "4", "5"] and ece["n_shifts"] == 3
    assert {"direction", "p", "p_holm", "family_size", "low", "high"} <= set(ece["by_severity"]["1"])
    sizes = {c["family_size"] for f in shift for c in (f["by_severity"].values() if "by_severity" in f else [f])
             if c.get("family_size")}
    assert len(sizes) == 1
    clean = [f for f in found if f.get("family") != "shift"]
    without = findings(dataclasses.replace(tables, shift=tables.shift.iloc[:0], shift_gallery=tables.shift_gallery.iloc[:0]))
    # The same clean claims; the answer only gains its sentence on the shifts.
    assert clean[1:] == without[1:] and clean[0]["sentences"][:-1] == without[0]["sentences"]
    assert clean[0]["sentences"][-1].startswith("Under distribution shift (severity 5")
    meta = findings_document(tables, found)["metadata"]["correction"]
    assert meta["shift_family_sizes"] == {"fashion_mnist/mlp": sizes.pop()}
    assert meta["family_sizes"] == findings_document(tables, without)["metadata"]["correction"]["family_sizes"]


def test_a_file_of_the_users_with_a_name_the_report_writes_is_never_overwritten(report_results, tmp_path, capsys):
    out = tmp_path / "report" / "index.html"
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 0
    capsys.readouterr()
    name = sorted(p.name for p in (out.parent / "figures").iterdir() if p.suffix == ".svg")[0]
    fresh = tmp_path / "fresh"
    (fresh / "figures").mkdir(parents=True)
    (fresh / "figures" / name).write_text("USER")
    assert cli_main(["report", str(report_results), "-o", str(fresh / "index.html")]) == 1
    err = capsys.readouterr().err
    assert f"{fresh / 'figures' / name}: a file lsbench report did not write there" in err and err.count("\n") == 1
    assert (fresh / "figures" / name).read_text() == "USER" and not (fresh / "index.html").exists()
    (fresh / "figures" / name).unlink()
    (fresh / "findings.json").write_text('{"mine": 1}')
    assert cli_main(["report", str(report_results), "-o", str(fresh / "index.html")]) == 1
    assert "findings.json: not findings lsbench report wrote" in capsys.readouterr().err
    assert (fresh / "findings.json").read_text() == '{"mine": 1}'
    # Its own files, rewritten: a second report into the first folder replaces them.
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 0


def test_a_report_never_writes_over_a_table_it_reads(report_results, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(report_results, results)
    (tmp_path / "link.parquet").symlink_to(results / "metrics.parquet")
    before = {p.name: p.read_bytes() for p in results.glob("*.parquet")}
    for out in (results / "runs.parquet", results / ".." / "results" / "predictions.parquet",
                tmp_path / "link.parquet", results / "shift.parquet"):
        assert cli_main(["report", str(results), "-o", str(out)]) == 1, out
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "a table the report reads" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in results.glob("*.parquet")} == before
    assert not (results / "findings.json").exists() and not (results / "figures").exists()


def test_the_workflows_stamp_records_the_report_and_goes_when_the_page_changes(report_results, tmp_path, capsys):
    from lsbench.plan import report_code_sha256

    out = tmp_path / "report" / "index.html"
    out.parent.mkdir()
    other = out.parent / "report-0000000000000001.json"  # the stamp of another grid's report
    other.write_text(json.dumps({"written_by": "lsbench report"}))
    users = out.parent / "report-0000000000000002.json"  # a user's file of that name: not lsbench's
    users.write_text('{"mine": 1}')
    stamp = out.parent / "report-00000000000000ab.json"
    assert cli_main(["report", str(report_results), "-o", str(out), "--stamp", str(stamp)]) == 0
    record = json.loads(stamp.read_text())
    assert record["report_code"] == report_code_sha256() and record["tables"] == str(report_results.resolve())
    assert {"index.html", "findings.json"} <= set(record["files"]) and all((out.parent / f).is_file()
                                                                          for f in record["files"])
    assert not other.exists() and users.read_text() == '{"mine": 1}'
    # Rendered by hand afterwards: the page is no longer the workflow's, so neither is its stamp.
    assert cli_main(["report", str(report_results), "-o", str(out)]) == 0
    assert not stamp.exists() and users.exists()
    for bad in (tmp_path / "report-00000000000000ab.json", out.parent / "stamp.json"):
        assert cli_main(["report", str(report_results), "-o", str(out), "--stamp", str(bad)]) == 1
        assert "not a report-<16 hex digits>.json beside" in capsys.readouterr().err


def test_collect_replaces_its_own_grid_manifests_only(report_results, tmp_path):
    from lsbench.pipeline import collect

    out = tmp_path / "results"
    out.mkdir()
    mine, old = out / "grid-notes.json", out / "grid-00000000000000ff.json"  # a user's file; an earlier grid's
    mine.write_text("{}")
    old.write_text("{}")
    collect(sorted((report_results.parent / "runs").iterdir()), out, lambda m: None,
            manifest=out / "grid-0123456789abcdef.json")
    assert mine.read_text() == "{}" and not old.exists() and (out / "grid-0123456789abcdef.json").is_file()


def test_no_command_writes_over_a_file_it_reads(report_results, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(report_results.parent, root)
    data, run, results = root / "data" / "fashion_mnist.npz", root / "runs" / "s0e0.0", root / "results"
    os.link(results / "metrics.parquet", tmp_path / "hard.html")  # the same file by another name
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for argv in (["shift-data", "--dataset", "fashion_mnist", "--data", str(data), "--out",
                  str(root / "data" / ".." / "data" / "fashion_mnist.npz"), "rotation"],
                 ["collect", "--out-dir", str(run), "--", str(run)],
                 ["evaluate-shifts", "--model", "mlp", "--data", str(data), "--out", str(run / "calibrated.parquet"),
                  str(run)],
                 ["train", "--dataset", "fashion_mnist", "--model", "mlp", "--data", str(run / "runs.parquet"),
                  "--out-dir", str(run), "--seed", "0"],
                 ["report", str(results), "-o", str(tmp_path / "hard.html")]):
        assert cli_main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and ("an input of lsbench" in err or "a table the report reads" in err), err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files


def _edited_shift_tables(results, tmp_path, name: str, change) -> "Path":
    """A copy of `results` whose shift.parquet or shift_gallery.parquet went through `change`."""
    from lsbench import io as lsio

    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    path = copy / f"{name}.parquet"
    lsio.write_parquet(change(pd.read_parquet(path)), path)
    return copy


def _first_clean(df: pd.DataFrame) -> pd.Series:
    return (df["shift"] == "none") & (df.index == df.index[df["shift"] == "none"][0])


@pytest.mark.parametrize("name,change,needle", [
    # A ValueError traceback from the gallery figure's reshape.
    ("shift_gallery", lambda df: df.assign(pixels=df["pixels"].map(lambda b: b[:-1])),
     "have pixels that are not channels x height x width bytes"),
    ("shift_gallery", lambda df: df.assign(height=df["width"] * 2, width=df["height"] // 2),
     "image(s) of another shape than their dataset's runs"),
    ("shift_gallery", lambda df: df.assign(pixels=df["pixels"].map(lambda b: b.decode("latin1"))),
     "column 'pixels' holds str, expected bytes"),
    # Accepted: the shift rows' temperature is copied from calibrated.parquet, the clean rows are
    # the final model on images whose predictions the run stored.
    ("shift", lambda df: df.assign(temperature=df["temperature"] * 2),
     "have a temperature that is not their run's in calibrated.parquet"),
    ("shift", lambda df: df.assign(ece=df["ece"].mask(_first_clean(df), df["ece"] / 2)),
     "the clean (none, severity 0) row's ece = "),
    ("shift", lambda df: df.assign(accuracy=df["accuracy"].mask(_first_clean(df), 1.0 - df["accuracy"])),
     "the clean (none, severity 0) row's accuracy = "),
], ids=["pixels of the wrong size", "another shape", "pixels as text", "temperature", "clean ece", "clean accuracy"])
def test_shift_tables_that_do_not_follow_from_the_runs_are_refused(report_results, tmp_path, capsys, name, change,
                                                                   needle):
    results = _edited_shift_tables(report_results, tmp_path, name, change)
    assert cli_main(["report", str(results), "-o", str(tmp_path / "r" / "index.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{name}.parquet: " in err and needle in err, err


def test_a_bad_temperature_is_blamed_on_calibrated_parquet_even_beside_shift_rows(report_results, tmp_path):
    """shift.parquet copies each run's temperature: a NaN in calibrated.parquet must be named there,
    not as shift rows whose temperature is not their run's."""
    from lsbench import io as lsio
    from lsbench.tables import TablesError

    results = tmp_path / "results"
    shutil.copytree(report_results, results)
    calibrated = pd.read_parquet(results / "calibrated.parquet")
    calibrated.loc[0, "temperature"] = float("nan")
    lsio.write_parquet(calibrated, results / "calibrated.parquet")
    with pytest.raises(TablesError, match=r"calibrated.parquet: temperature = nan although the run held out \d+ "
                                          r"images.*'param': 0.0, 'seed': 0"):
        read_tables(results)
