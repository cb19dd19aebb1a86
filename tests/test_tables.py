"""`lsbench report` on imperfect tables: one line naming the file and the problem."""


import pandas as pd
import pytest

from lsbench.cli import main as cli_main
from lsbench.io import PUBLISHED
from lsbench.tables import read_tables
from synthetic import make_tables, write_tables


@pytest.fixture
def results(tmp_path):
    write_tables(make_tables(), tmp_path / "results")
    return tmp_path / "results"


def rewrite(path, change):
    df = pd.read_parquet(path)
    change(df).to_parquet(path, index=False)


def report_error(results, tmp_path, capsys) -> str:
    assert cli_main(["report", str(results), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert not (tmp_path / "r.html").exists()
    return err


def test_intact_tables_render(results, tmp_path, capsys):
    assert cli_main(["report", str(results), "-o", str(tmp_path / "r.html")]) == 0


@pytest.mark.parametrize("table", PUBLISHED)
def test_truncated_file(results, tmp_path, capsys, table):
    path = results / f"{table}.parquet"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert f"{path}: not a readable parquet file" in report_error(results, tmp_path, capsys)


def test_empty_file(results, tmp_path, capsys):
    (results / "metrics.parquet").write_bytes(b"")
    assert "metrics.parquet: not a readable parquet file" in report_error(results, tmp_path, capsys)


def test_missing_column(results, tmp_path, capsys):
    rewrite(results / "calibrated.parquet", lambda df: df.drop(columns=["ece_ts"]))
    assert "calibrated.parquet: missing column(s) ece_ts" in report_error(results, tmp_path, capsys)


def test_wrong_dtype(results, tmp_path, capsys):
    rewrite(results / "metrics.parquet", lambda df: df.assign(seed=df["seed"].astype(str)))
    err = report_error(results, tmp_path, capsys)
    assert "metrics.parquet: column 'seed' holds" in err and "expected integers" in err


def test_zero_rows(results, tmp_path, capsys):
    rewrite(results / "reliability.parquet", lambda df: df.iloc[:0])
    assert "reliability.parquet: no rows" in report_error(results, tmp_path, capsys)


def test_duplicated_metric_rows_are_refused_not_counted_as_seeds(results, tmp_path, capsys):
    # Duplicates used to render n=4 "seeds" for 2, with narrower intervals.
    rewrite(results / "metrics.parquet", lambda df: pd.concat([df, df]))
    err = report_error(results, tmp_path, capsys)
    assert "metrics.parquet:" in err and "share their (dataset, model, method, param, seed, epoch)" in err


def test_tables_with_different_runs(results, tmp_path, capsys):
    rewrite(results / "predictions.parquet", lambda df: df[df["seed"] == 0])
    err = report_error(results, tmp_path, capsys)
    assert "predictions.parquet: not the runs of runs.parquet: 2 run(s) missing" in err


def test_missing_file(results, tmp_path, capsys):
    (results / "provenance.parquet").unlink()
    assert "provenance.parquet: missing" in report_error(results, tmp_path, capsys)


def test_two_provenance_rows(results, tmp_path, capsys):
    rewrite(results / "provenance.parquet", lambda df: pd.concat([df, df]))
    assert "provenance.parquet: 2 rows, expected one" in report_error(results, tmp_path, capsys)


def test_ood_tables_hold_the_runs_with_an_ood_set(results, tmp_path, capsys):
    rewrite(results / "ood.parquet", lambda df: df[df["seed"] == 0])
    err = report_error(results, tmp_path, capsys)
    assert "ood.parquet: not the runs with an ood_set in runs.parquet: 2 run(s) missing" in err


def test_results_without_any_ood_set_render(tmp_path, capsys):
    write_tables(make_tables(ood_sets={}), tmp_path / "results")
    assert pd.read_parquet(tmp_path / "results" / "ood.parquet").empty
    assert cli_main(["report", str(tmp_path / "results"), "-o", str(tmp_path / "r.html")]) == 0
    assert "No study has an out-of-distribution set" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("table,change,needle", [
    ("runs", lambda df: df.assign(class_names='["a", "b"]'), "class_names that are not a JSON list of num_classes"),
    ("runs", lambda df: df.assign(class_names="T-shirt, Trouser"), "class_names that are not a JSON list"),
    ("runs", lambda df: df.assign(image_shape="28 by 28"), "image_shape that is not CxHxW"),
    ("metrics", lambda df: df.assign(param=df["param"].where(df["param"] == 0, 1.5)), "param outside their method's range"),
    ("metrics", lambda df: df.assign(method=df["method"].where(df["param"] == 0, "focul")), "have a method that is not one of"),
    ("metrics", lambda df: df.assign(model=df["model"].where(df["epoch"] > 1, None)), "lack a value in dataset"),
    ("metrics", lambda df: df.assign(epoch=df["epoch"] + 100), "epoch outside 1..epochs of runs.parquet"),
    ("metrics", lambda df: df.assign(ece=float("nan")), "have a metric that is not finite or out of its range"),
    ("metrics", lambda df: df.assign(accuracy=df["accuracy"] * 100), "have a metric that is not finite or out of"),
    # A NaN in any metric of a converged run, not only accuracy and ECE.
    ("metrics", lambda df: df.assign(smece=df["smece"].where(df["seed"] != 0)), "not finite or out of its range"),
    ("metrics", lambda df: df.assign(aurc=-0.5), "not finite or out of its range"),
    # The run's last row missing: its epoch 1 row would pass for its final epoch.
    ("metrics", lambda df: df[~((df["seed"] == 0) & (df["param"] == 0) & (df["epoch"] == 2))],
     "did not diverge but end before the epochs of runs.parquet"),
    ("metrics", lambda df: df[~((df["seed"] == 0) & (df["param"] == 0) & (df["epoch"] == 1))],
     "lack an epoch before their last"),
    ("metrics", lambda df: df.assign(seed=df["seed"] + 2**40), "seed outside [0, 2^32 - 1]"),
    ("calibrated", lambda df: df.assign(temperature=-1.0), "value out of its range"),
    ("calibrated", lambda df: df.assign(ece_low=0.5, ece_high=0.1), "low end is above its high end"),
    ("ood", lambda df: df.assign(auroc=1.5), "auroc, aupr_in, aupr_out or fpr95 outside [0, 1]"),
    ("reliability", lambda df: df.assign(count=df["count"] * 1000), "do not add up to n_test"),
    ("predictions", lambda df: df.assign(label=42), "label outside 0..num_classes-1"),
    ("predictions", lambda df: df.assign(prob_0=5.0), "probability outside [0, 1]"),
    ("reliability", lambda df: df[df["bin"] != 3], "bins that are not 0, 1, ..., n-1"),
    ("predictions", lambda df: df.drop(columns=["prob_3"]), "missing column(s) prob_3"),
])
def test_values_the_report_would_misread(results, tmp_path, capsys, table, change, needle):
    rewrite(results / f"{table}.parquet", change)
    err = report_error(results, tmp_path, capsys)
    assert f"{table}.parquet" in err and needle in err, err
    assert "np.int64" not in err and "np.float64" not in err, err  # plain values name the run


def test_half_of_the_predictions_are_refused(results, tmp_path, capsys):
    rewrite(results / "predictions.parquet", lambda df: df[df["index"] % 2 == 0])
    err = report_error(results, tmp_path, capsys)
    assert "predictions.parquet" in err and "rows missing" in err and "'dataset': 'fashion_mnist'" in err


def test_a_missing_image_zero_is_refused(results, tmp_path, capsys):
    rewrite(results / "predictions.parquet", lambda df: df[df["index"] != 0])
    err = report_error(results, tmp_path, capsys)
    assert "predictions.parquet" in err and "not 0, 1, ..., n-1" in err


def test_predictions_from_another_results_folder_are_refused(results, tmp_path, capsys):
    other = make_tables(sharpness=lambda eps: 3.0, accuracy=lambda eps: 0.5)  # other runs, same keys
    other.predictions.to_parquet(results / "predictions.parquet", index=False)
    err = report_error(results, tmp_path, capsys)
    assert "predictions.parquet" in err and "not the predictions their final metrics" in err


def test_ood_predictions_without_logits_are_refused(results, tmp_path, capsys):
    rewrite(results / "ood_predictions.parquet", lambda df: df.drop(columns=[c for c in df if c.startswith("logit_")]))
    assert "ood_predictions.parquet: missing column(s) logit_0" in report_error(results, tmp_path, capsys)


def test_class_names_are_text_not_mathtext(results, tmp_path, capsys):
    import json

    names = json.dumps(["$\\undefinedmacro$", "a_b^c", "$x$", "{}"])
    rewrite(results / "runs.parquet", lambda df: df.assign(class_names=names))
    assert cli_main(["report", str(results), "-o", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_report_path_is_refused(results, capsys, out):
    assert cli_main(["report", str(results), "-o", out]) == 1
    err = capsys.readouterr().err
    assert "an empty path" in err and "Traceback" not in err


def _swap_small_probs(df):
    """Swap prob_0 and prob_1 in one row where neither is the top class: accuracy and confidence
    stay, the probabilities are no longer the logits' softmax."""
    df = df.copy()
    probs = df[[f"prob_{c}" for c in range(4)]].to_numpy()
    row = df.index[(probs.argmax(axis=1) > 1) & (abs(probs[:, 0] - probs[:, 1]) > 1e-3)][0]
    df.loc[row, ["prob_0", "prob_1"]] = df.loc[row, ["prob_1", "prob_0"]].to_numpy()
    return df


def _change_one(column, how):
    def change(df):
        df = df.copy()
        df.loc[df.index[0], column] = how(df.loc[df.index[0], column])
        return df
    return change


def _change_final(column, how):
    """Change `column` in the final epoch's row of one converged run."""
    def change(df):
        df = df.copy()
        row = df.index[(df["epoch"] == df["epoch"].max()) & ~df["diverged"]][0]
        df.loc[row, column] = how(df.loc[row, column])
        return df
    return change


@pytest.mark.parametrize("table,change,needle", [
    ("predictions", _change_one("logit_0", lambda v: float("nan")), "a logit that is not finite"),
    ("ood_predictions", _change_one("logit_1", lambda v: float("inf")), "a logit that is not finite"),
    ("predictions", lambda df: _swap_small_probs(df), "not the softmax of the logits"),
    ("calibrated", lambda df: df.assign(temperature=df["temperature"] * 1.5), "ece_ts = "),
    ("reliability", lambda df: df.assign(count=df.groupby(["seed", "param"])["count"].transform(
        lambda c: c.sample(frac=1.0, random_state=1).to_numpy())), "bin counts that do not follow"),
    ("ood", lambda df: df.assign(auroc=df["auroc"] * 0.99), "auroc of score 'msp' = "),
    # Each was accepted: only accuracy, mean confidence, ece_ts and the MSP AUROC were recomputed.
    ("metrics", _change_final("ece", lambda v: v + 0.01), "the final epoch's ece = "),
    ("metrics", _change_final("smece", lambda v: v / 2), "the final epoch's smece = "),
    ("metrics", _change_final("test_nll", lambda v: v * 0.9), "the final epoch's test_nll = "),
    ("reliability", lambda df: df.assign(accuracy=df["accuracy"].mask(df.index == df.index[df["count"] > 0][0],
                                                                     (df["accuracy"] + 0.25) % 1.0)),
     "a bin's accuracy = "),
    ("calibrated", _change_one("aurc_margin", lambda v: v / 2), "aurc_margin = "),
    ("calibrated", _change_one("nll_ts", lambda v: v * 0.9), "nll_ts = "),
    ("ood", lambda df: df.assign(fpr95=df["fpr95"].where(df["score"] != "energy", 0.0)), "fpr95 of score 'energy'"),
    # A run that held out images has a finite, positive temperature; NaN skipped every check of it.
    ("calibrated", _change_one("temperature", lambda v: float("nan")), "temperature = nan although the run held out"),
    ("calibrated", _change_one("temperature", lambda v: float("inf")), "have an infinite temperature"),
])
def test_tables_that_do_not_follow_from_the_predictions_are_refused(results, tmp_path, capsys, table, change,
                                                                     needle):
    rewrite(results / f"{table}.parquet", change)
    err = report_error(results, tmp_path, capsys)
    assert f"{table}.parquet" in err and needle in err, err


def test_tables_of_another_grid_are_refused(results, tmp_path, capsys):
    write_tables(make_tables(seeds=(0, 1, 2)), tmp_path / "other")
    (tmp_path / "other" / "provenance.parquet").replace(results / "provenance.parquet")
    err = report_error(results, tmp_path, capsys)
    assert "provenance.parquet: its config says seeds = [0, 1, 2]" in err
    write_tables(make_tables(), tmp_path / "same")
    other = make_tables(sharpness=lambda eps: 3.0)  # the same runs' keys, other numbers
    other.calibrated.to_parquet(results / "calibrated.parquet", index=False)
    (tmp_path / "same" / "provenance.parquet").replace(results / "provenance.parquet")
    assert "calibrated.parquet" in report_error(results, tmp_path, capsys)


def test_a_report_path_that_is_a_directory_is_refused(results, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (".", "..", str(tmp_path)):
        assert cli_main(["report", str(results), "-o", out]) == 1
        err = capsys.readouterr().err
        assert "a directory" in err and "Traceback" not in err


def as_previous_version(tables):
    """`tables` as lsbench 0.2 wrote them: keyed by (dataset, model, seed, epsilon), no method or
    param, no val_nll in calibrated.parquet, no AUPR in ood.parquet."""
    import dataclasses

    def old(df):
        if "method" not in df.columns:
            return df
        df = df.drop(columns=["val_nll", "aupr_in", "aupr_out"], errors="ignore")
        rest = [c for c in df.columns if c not in ("dataset", "model", "method", "param", "seed")]
        return df.assign(epsilon=df["param"])[["dataset", "model", "seed", "epsilon", *rest]]

    return dataclasses.replace(tables, **{f.name: old(getattr(tables, f.name)) for f in dataclasses.fields(tables)})


def test_tables_of_the_previous_version_still_render(tmp_path):
    from lsbench.report import render

    tables = make_tables(seeds=range(3), epsilons=(0.0, 0.1, 0.2))
    write_tables(as_previous_version(tables), tmp_path / "old")
    assert "epsilon" in pd.read_parquet(tmp_path / "old" / "metrics.parquet").columns
    again = read_tables(tmp_path / "old")
    assert sorted(set(again.runs[["method", "param"]].itertuples(index=False, name=None))) == [
        ("cross_entropy", 0.0), ("label_smoothing", 0.1), ("label_smoothing", 0.2)]
    # AUPR-In and -Out, which those tables lack, are computed from their logits as a run computes them;
    # a table with one of them gets the other.
    half = pd.read_parquet(tmp_path / "old" / "ood.parquet").assign(aupr_in=tables.ood["aupr_in"].to_numpy())
    half.to_parquet(tmp_path / "half.parquet")
    (tmp_path / "half").mkdir()
    for f in (tmp_path / "old").iterdir():
        (tmp_path / "half" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "half" / "ood.parquet").write_bytes((tmp_path / "half.parquet").read_bytes())
    pd.testing.assert_frame_equal(read_tables(tmp_path / "half").ood[tables.ood.columns], tables.ood,
                                  check_dtype=False, rtol=1e-12)
    assert "aupr_in" not in pd.read_parquet(tmp_path / "old" / "ood.parquet").columns
    for name in ("metrics", "predictions", "reliability", "ood"):
        new, old = getattr(tables, name), getattr(again, name)
        pd.testing.assert_frame_equal(old[new.columns], new, check_dtype=False, rtol=1e-12)
    html = render(again)
    assert "label smoothing ε = 0.1" in html and 'id="fashion_mnist-mlp-methods"' in html
    # No held-out NLL in those tables: the setting is a test-set choice, and the report says so.
    assert "test-set choice" in html


def test_a_previous_grid_without_epsilon_zero_has_no_baseline_and_says_so(tmp_path):
    from lsbench.findings import study_findings
    from lsbench.studies import split_studies

    tables = make_tables(seeds=range(3), epsilons=(0.1, 0.2))
    write_tables(as_previous_version(tables), tmp_path / "old")
    records = study_findings(split_studies(read_tables(tmp_path / "old"))[0])
    assert [r for r in records if r["id"] == "baseline_diverged"] and "no cross-entropy run" in records[-1]["text"]
    from lsbench.report import render

    html = render(read_tables(tmp_path / "old"))
    assert "no converged cross-entropy run (the baseline)" in html and "every run diverged" not in html
    assert "has no converged cross-entropy run" in html  # the methods section says so too


def test_every_schema_version_lsbench_wrote_is_read_and_a_later_one_is_named(results, tmp_path, capsys):
    import pyarrow.parquet as pq

    from lsbench import io

    path = results / "metrics.parquet"
    assert io.schema_version(path)[0] == io.SCHEMA_VERSION  # write_tables stamps, as collect does
    # Version 1: no stamp (lsbench up to 0.2.x); the report reads it.
    table = pq.read_table(path)
    unstamped = {k: v for k, v in table.schema.metadata.items() if not k.startswith(b"lsbench.")}
    pq.write_table(table.replace_schema_metadata(unstamped), path)
    assert io.schema_version(path)[0] == 1
    assert cli_main(["report", str(results), "-o", str(tmp_path / "ok.html")]) == 0
    capsys.readouterr()
    # A later version: refused, naming it and who wrote it.
    pq.write_table(table.replace_schema_metadata({**unstamped, io.SCHEMA_VERSION_KEY: b"99",
                                                  io.VERSION_KEY: b"9.0.0"}), path)
    err = report_error(results, tmp_path, capsys)
    assert "metrics.parquet: table schema version 99 (written by lsbench 9.0.0)" in err and "reads versions 1, 2" in err
    pq.write_table(table.replace_schema_metadata({**unstamped, io.SCHEMA_VERSION_KEY: b"banana"}), path)
    err = report_error(results, tmp_path, capsys)
    assert "lsbench.schema_version = 'banana' in its metadata is not a schema version" in err


@pytest.mark.parametrize("table", ["metrics", "calibrated", "runs", "ood", "shift"])
def test_a_computed_column_that_is_not_declared_or_the_reverse_is_an_error_naming_it(table):
    """pandas' from_records(columns=...) drops an undeclared key and fills a missing one with NaN: a
    new metric would vanish from the published table without a word."""
    from lsbench import io

    key = io.RunKey("digits", "mlp", "cross_entropy", 0.0, 0)
    columns = {"metrics": io.METRIC_COLUMNS, "calibrated": io.CALIBRATED_COLUMNS, "runs": io.RUN_COLUMNS,
               "ood": io.OOD_COLUMNS, "shift": io.SHIFT_COLUMNS}[table]
    record = {c: 0.0 for c in columns if c not in io.KEY}
    write = {"metrics": lambda r: io.metrics_frame(key, [r]),
             "calibrated": lambda r: io.row_frame(key, r, io.CALIBRATED_COLUMNS),
             "runs": lambda r: io.row_frame(key, r, io.RUN_COLUMNS),
             "ood": lambda r: io.ood_frame(key, "mnist", {"msp": {k: v for k, v in r.items()
                                                                  if k not in ("ood_set", "score")}}),
             "shift": lambda r: io.shift_frame(key, [r])}[table]
    if table == "metrics":
        record.update(diverged=False, divergence="")
    assert len(write(record)) == 1  # exactly the declared columns: written
    with pytest.raises(io.UndeclaredColumnError, match=rf"table {table}: computed but not declared in lsbench.io: "
                                                        r"\['new_metric'\]; declared but not computed: none"):
        write({**record, "new_metric": 1.0})
    dropped = sorted(set(columns) - set(io.KEY) - {"ood_set", "score"})[0]
    with pytest.raises(io.UndeclaredColumnError, match=rf"declared but not computed: \['{dropped}'\]"):
        write({k: v for k, v in record.items() if k != dropped})


def test_the_temperature_fit_flag_is_read_not_derived_and_older_tables_get_0_3s(results):
    from lsbench.metrics import temperature_at_bound

    # Written by the fit: kept as written, whatever the temperature (there is no fixed bound now).
    rewrite(results / "calibrated.parquet", lambda df: df.assign(temperature_at_bound=[True] + [False] * (len(df) - 1)))
    assert read_tables(results).calibrated["temperature_at_bound"].tolist()[:2] == [True, False]
    # Tables of lsbench 0.3 and before lack it: their search's bounds, 0.05 and 20, say.
    rewrite(results / "calibrated.parquet", lambda df: df.drop(columns=["temperature_at_bound"]))
    got = read_tables(results).calibrated
    assert got["temperature_at_bound"].tolist() == temperature_at_bound(got["temperature"]).tolist()


@pytest.mark.parametrize("stamp,needle", [
    ("²".encode(), "lsbench.schema_version = '²' in its metadata is not a schema version"),
    (b"9" * 5000, "lsbench.schema_version = '999999999999...9999999999999' in its metadata is not a schema version"),
    (b"\xff", "lsbench.schema_version = '\ufffd' in its metadata is not a schema version"),
], ids=["superscript two", "5000 digits", "not UTF-8"])
def test_a_stamp_that_is_no_schema_version_is_named_not_called_unreadable(results, tmp_path, capsys, stamp, needle):
    """'²'.isdigit() is True but int('²') raises, as int() does beyond 4,300 digits: both were
    reported as "not a readable parquet file"."""
    import pyarrow.parquet as pq

    from lsbench import io

    path = results / "calibrated.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, io.SCHEMA_VERSION_KEY: stamp}), path)
    err = report_error(results, tmp_path, capsys)
    assert f"{path}: {needle}" in err and "not a readable parquet file" not in err and len(err) < 600, err
