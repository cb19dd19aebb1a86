"""The findings' rules on synthetic tables whose right conclusion is known, in each direction."""

import functools

import numpy as np
import pandas as pd
import pytest

from lsbench.findings import lowest, select, study_findings
from lsbench.studies import split_studies
from synthetic import make_tables

SEEDS = range(5)
# Large test sets and five seeds, so that a built-in effect is detectable and a null one is not.
N = 1500


def findings(n_test: int = N, **kwargs) -> list[dict]:
    tables = make_tables(seeds=SEEDS, n_test=n_test, **kwargs)
    return study_findings(split_studies(tables)[0])


def by_id(records: list[dict], id_: str) -> list[dict]:
    return [r for r in records if r["id"] == id_]


def one(records: list[dict], id_: str, **where) -> dict:
    hits = [r for r in by_id(records, id_) if all(r.get(k) == v for k, v in where.items())]
    assert len(hits) == 1, (id_, where, hits)
    return hits[0]


def test_overconfidence_everywhere_has_no_flip():
    records = findings(epsilons=(0.0, 0.1), sharpness=lambda e: 3.0, accuracy=lambda e: 0.6)
    for r in by_id(records, "miscalibration_direction"):
        assert r["direction"] == "over" and r["low"] > 0 and "overconfident" in r["text"]
    assert by_id(records, "miscalibration_flip") == []


def test_over_to_underconfidence_flips_where_it_does():
    # Sharp logits at eps=0 (overconfident), nearly flat ones at eps=0.3 (underconfident).
    records = findings(epsilons=(0.0, 0.1, 0.3), sharpness=lambda e: 2.5 - 7.5 * e, accuracy=lambda e: 0.8)
    assert one(records, "miscalibration_direction", param=0.0)["direction"] == "over"
    under = one(records, "miscalibration_direction", param=0.3)
    assert under["direction"] == "under" and under["high"] < 0 and "underconfident" in under["text"]
    flip = one(records, "miscalibration_flip")
    assert flip["method"] == "label_smoothing" and flip["to_param"] == 0.3 and flip["from_param"] in (0.0, 0.1)


def test_the_setting_is_chosen_on_held_out_images_and_tested_against_cross_entropy():
    # Sharpness 2.5 - 7.5 eps: eps=0.1 (sharpness 1.75) is far better calibrated than eps=0 (2.5);
    # the held-out images follow the same rule, so their NLL picks it too.
    records = findings(epsilons=(0.0, 0.1, 0.3), sharpness=lambda e: 2.5 - 7.5 * e, accuracy=lambda e: 0.8,
                       n_test=4000)
    s = one(records, "method_setting", setting_of="label_smoothing")
    assert s["selection"] == "val_nll" and s["candidates"] == 3  # eps 0.1, 0.3 and eps 0 (cross-entropy)
    assert s["param"] == 0.1 and s["direction"] == "under" and s["high"] < 0 and s["p"] < 0.05
    assert "lower than cross-entropy's" in s["text"] and "validation NLL" in s["text"]
    assert s["test_optimum_param"] == 0.1


def test_the_choice_ignores_the_test_set():
    tables = make_tables(seeds=SEEDS, epsilons=(0.0, 0.1, 0.3), n_test=N, sharpness=lambda e: 2.5 - 7.5 * e)
    # Make eps 0.3 look best on the held-out images only: the choice follows them, the test-set
    # optimum (by ECE) stays eps 0.1 and is named beside it.
    c = tables.calibrated
    c.loc[c["param"] == 0.3, "val_nll"] = c["val_nll"].min() / 2
    s = one(study_findings(split_studies(tables)[0]), "method_setting", setting_of="label_smoothing")
    assert s["param"] == 0.3 and s["test_optimum_param"] == 0.1 and "test-set optimum by ECE" in s["text"]


def test_without_held_out_images_the_choice_says_it_used_the_test_set():
    records = findings(epsilons=(0.0, 0.1, 0.3), validation=False)
    s = one(records, "method_setting", setting_of="label_smoothing")
    assert s["selection"] == "test_nll" and "test-set choice" in s["text"]


def test_the_best_method_is_compared_with_label_smoothing_and_temperature_scaling():
    # Focal loss at gamma 0.05 (the synthetic sharpness 1.5) calibrates better than LS at 0.3.
    records = findings(methods={"label_smoothing": [0.3], "focal": [0.05]}, sharpness=lambda p: 2.5 - 20 * p
                       if p < 0.2 else 3.0, accuracy=lambda p: 0.7)
    best = one(records, "best_method")
    assert (best["method"], best["param"]) == ("focal", 0.05)
    assert best["vs_label_smoothing"]["direction"] == "under" and "against label smoothing's chosen" in best["text"]
    assert "vs_temperature_scaling" in best and "temperature scaling alone" in best["text"]
    assert best["vs_cross_entropy"]["direction"] == "under" and "against cross-entropy: lower" in best["text"]
    # LS at 0.3 is sharper than cross-entropy (higher held-out NLL): its chosen value is eps 0.
    ls = one(records, "method_setting", setting_of="label_smoothing")
    assert (ls["method"], ls["param"]) == ("cross_entropy", 0.0)
    assert ls["variant"] == "label smoothing ε = 0.0 (cross-entropy)" and "does not help" in ls["text"]
    assert one(records, "temperature_scaling_vs_method", method="focal")
    assert by_id(records, "temperature_scaling_vs_method") == [one(records, "temperature_scaling_vs_method")]


def test_underconfident_methods_and_costs_are_listed():
    # LogitNorm (no neutral value: its one setting is chosen) at 0.3: flat logits (underconfident)
    # and fewer right answers.
    records = findings(methods={"logit_norm": [0.3], "focal": [1.0]},
                       sharpness=lambda p: 0.4 if p == 0.3 else 2.0, accuracy=lambda p: 0.6 if p == 0.3 else 0.8)
    under = one(records, "underconfident_methods")
    assert under["variants"] == ["LogitNorm τ = 0.3"] and "LogitNorm τ = 0.3" in under["text"]
    costs = one(records, "method_costs")
    assert costs["lower_accuracy"] == ["LogitNorm τ = 0.3"] and "lowers accuracy" in costs["text"]


def test_an_ece_gain_within_the_margin_is_no_effect_and_crowns_nothing():
    # Focal loss's ECE is cross-entropy's minus ~1e-6 on every seed (t-test p ~ 1e-5, far below the
    # 0.005 margin), and its held-out NLL is made the lowest so that it is focal's chosen setting.
    tables = make_tables(seeds=SEEDS, n_test=300, methods={"focal": [0.5]}, sharpness=lambda p: 2.0)
    m, c = tables.metrics, tables.calibrated
    last = m["epoch"] == m["epoch"].max()
    for seed in SEEDS:
        ce = m.loc[last & (m["method"] == "cross_entropy") & (m["seed"] == seed), "ece"].iloc[0]
        m.loc[last & (m["method"] == "focal") & (m["seed"] == seed), "ece"] = ce - 1e-6 * (1 + 0.1 * seed)
    c.loc[c["method"] == "focal", "val_nll"] = c["val_nll"].min() / 2
    records = study_findings(split_studies(tables)[0])
    setting = one(records, "method_setting", setting_of="focal")
    assert (setting["method"], setting["direction"]) == ("focal", "none") and setting["p"] < 1e-3
    assert "lower" not in setting["text"].split("Its ECE is")[1] and "no difference that matters" in setting["text"]
    best = one(records, "best_method")
    assert (best["method"], best["param"]) == ("cross_entropy", 0.0) and best["within_margin"] == ["focal loss γ = 0.5"]
    assert "none has a mean test ECE lower than cross-entropy's" in best["text"]
    answer = one(records, "answer")
    assert "has the lowest ECE" not in answer["text"] and "by more than ± 0.005" in answer["text"]
    assert answer["best"]["variant"] == "cross-entropy"


def test_a_method_without_a_parameter_is_its_only_setting():
    records = findings(methods={"focal_adaptive": None})
    s = one(records, "method_setting", setting_of="focal_adaptive")
    assert s["candidates"] == 1 and "its only setting" in s["text"] and s["variant"] == "FLSD-53"


@pytest.mark.parametrize("accuracy,direction,word", [
    (lambda e: 0.6 + e, "over", "raises accuracy"),
    (lambda e: 0.9 - e, "under", "lowers accuracy"),
    (lambda e: 0.8, "inconclusive", "cannot tell whether"),
])
def test_accuracy_effect_in_each_direction(accuracy, direction, word):
    records = findings(epsilons=(0.0, 0.2), accuracy=accuracy)
    effect = one(records, "accuracy_effect", param=0.2)
    assert effect["direction"] == direction and word in effect["text"]
    if direction == "inconclusive":
        # 1500 test images a seed: a null effect's interval is wider than the 0.005 that matters.
        assert effect["low"] < -0.005 or effect["high"] > 0.005
        assert "raises" not in effect["text"] and "lowers" not in effect["text"]
        assert "no detectable difference" not in effect["text"]


def set_final(tables, column: str, values: dict) -> None:
    """Final-epoch `column` of each (param, seed) in `values`, in place."""
    m = tables.metrics
    last = m["epoch"] == m["epoch"].max()
    for (param, seed), value in values.items():
        m.loc[last & (m["param"] == param) & (m["seed"] == seed), column] = value


def test_no_difference_only_when_the_interval_rules_out_one_that_matters():
    tables = make_tables(seeds=SEEDS, epsilons=(0.0, 0.2), n_test=200)
    # Differences of -0.001 .. +0.001: the interval lies within ± 0.005 of accuracy.
    set_final(tables, "accuracy", {**{(0.0, s): 0.8 for s in SEEDS},
                                   **{(0.2, s): 0.8 + d for s, d in zip(SEEDS, (-1e-3, 1e-3, 0, 5e-4, -5e-4))}})
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["direction"] == "none" and -0.005 <= effect["low_holm"] < 0 < effect["high_holm"] <= 0.005
    assert "no difference that matters in accuracy" in effect["text"] and "within ± 0.005" in effect["text"]


def test_holm_corrects_over_the_study_s_tests():
    # One accuracy gain with raw p just under 0.05 among the study's other tests: detectable
    # alone, not after Holm's correction over the family.
    tables = make_tables(seeds=SEEDS, epsilons=(0.0, 0.1, 0.2), n_test=200)
    gains = (0.004, 0.02, 0.012, 0.0, 0.016)
    set_final(tables, "accuracy", {**{(0.0, s): 0.8 for s in SEEDS},
                                   **{(0.2, s): 0.8 + g for s, g in zip(SEEDS, gains)}})
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["p"] < 0.05 and effect["low"] > 0, effect  # the uncorrected 95 % interval excludes 0
    assert effect["family_size"] > 10 and effect["p_holm"] >= 0.05 and effect["p_holm"] >= effect["p"]
    assert effect["direction"] == "inconclusive" and "raises" not in effect["text"]
    assert f"Holm-adjusted p = {effect['p_holm']:.3g} over {effect['family_size']} tests" in effect["text"]
    # The interval printed beside "cannot tell" is the one it used, at Holm's level: it includes 0.
    assert effect["low_holm"] < 0 < effect["high_holm"] and effect["level_holm"] > 95
    assert f"CI {effect['low_holm']:+.4f}, {effect['high_holm']:+.4f}]" in effect["text"]
    # Holm's first step: the smallest raw p is multiplied by the family's size; none decreases.
    records = study_findings(split_studies(tables)[0])
    tested = [r for r in records if r.get("p") is not None and r["p"] == r["p"]]
    assert all(r["p_holm"] >= r["p"] and r["family_size"] == effect["family_size"] for r in tested)
    # Each claim's test and the test of its mean over the last epochs are members of the family.
    members = [(r["p"], r["p_holm"]) for r in tested] + [
        (r["over_last_epochs"]["p"], r["over_last_epochs"]["p_holm"]) for r in tested
        if r.get("over_last_epochs") and r["over_last_epochs"]["p"] is not None]
    p, p_holm = min(members)
    assert p_holm == pytest.approx(min(1.0, p * effect["family_size"]))


def test_a_conclusion_of_the_last_epoch_only_says_it_depends_on_the_epoch():
    tables = make_tables(seeds=SEEDS, epsilons=(0.0, 0.2), epochs=5, n_test=200, accuracy=lambda e: 0.8)
    m = tables.metrics
    m.loc[(m["param"] == 0.0), "accuracy"] = 0.8
    # Epochs 1-4: seeds scatter around no gain; epoch 5: a clear gain, which their mean dilutes.
    noise = np.array([0.03, -0.03, 0.02, -0.02, 0.0])
    m.loc[(m["param"] == 0.2), "accuracy"] = 0.8 + noise[m.loc[m["param"] == 0.2, "seed"]]
    set_final(tables, "accuracy", {(0.2, s): 0.85 + 0.002 * s for s in SEEDS})
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["direction"] == "over" and effect["epochs_checked"] == [1, 2, 3, 4, 5]
    assert effect["holds_over_epochs"] is False and effect["direction_over_last_epochs"] == "inconclusive"
    assert effect["direction_by_epoch"] == {"1": "inconclusive", "2": "inconclusive", "3": "inconclusive",
                                            "4": "inconclusive", "5": "over"}
    assert ("It depends on the epoch: on each seed's mean over epochs 1–5, cannot tell; cannot tell "
            "at epoch 1, 2, 3, 4 alone.") in effect["text"]
    # A gain at every epoch holds.
    m.loc[(m["param"] == 0.2), "accuracy"] = 0.85 + 0.002 * m["seed"]
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["holds_over_epochs"] is True and "The same over epochs 1–5 (each seed's mean over them)." in effect["text"]
    # One noisy epoch at which the gain is not detectable does not overturn it; one with the
    # opposite effect does.
    noisy = (m["param"] == 0.2) & (m["epoch"] == 2)
    m.loc[noisy, "accuracy"] = 0.8 + np.array([0.06, -0.05, 0.07, -0.04, 0.05])[m.loc[noisy, "seed"]]
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["direction_by_epoch"]["2"] == "inconclusive" and effect["holds_over_epochs"] is True
    assert "; cannot tell at epoch 2 alone." in effect["text"]
    m.loc[noisy, "accuracy"] = 0.75 - 0.002 * m.loc[noisy, "seed"]
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["direction_by_epoch"]["2"] == "under" and effect["holds_over_epochs"] is False


def test_temperature_scaling_against_the_chosen_epsilon():
    # Every eps badly overconfident: the chosen eps stays miscalibrated; a fitted temperature fixes it.
    records = findings(epsilons=(0.0, 0.1), sharpness=lambda e: 3.0, accuracy=lambda e: 0.6)
    ts = one(records, "temperature_scaling_vs_method", method="label_smoothing")
    # The method's ECE minus temperature scaling's, the sign best_method's comparison has.
    assert ts["direction"] == "over" and ts["estimate"] > 0 and "temperature scaling is better" in ts["text"]
    best = one(records, "best_method")
    if (best["method"], best["param"]) == (ts["method"], ts["param"]):
        assert best["vs_temperature_scaling"]["estimate"] == pytest.approx(ts["estimate"])


def test_aurc_and_ood_effects():
    # Higher accuracy at eps=0.2 lowers AURC; flatter OOD logits at eps=0.2 make OOD easier to spot.
    records = findings(epsilons=(0.0, 0.2), accuracy=lambda e: 0.6 + e, ood_sharpness=lambda e: 1.5 - 6 * e)
    aurc = one(records, "aurc_effect", param=0.2)
    assert aurc["direction"] == "under" and "lowers AURC" in aurc["text"]
    # The size is unsigned ("lowers ... by 0.05"), the interval that of the signed difference.
    d = aurc
    assert f"by {abs(d['estimate']):.4f} against" in d["text"], d["text"]
    assert (f"(difference {d['estimate']:+.4f} [Holm {d['level_holm']:.2f} % CI {d['low_holm']:+.4f}, "
            f"{d['high_holm']:+.4f}]") in d["text"], d["text"]
    ood = one(records, "ood_auroc_effect", param=0.2)
    assert ood["direction"] == "over" and "raises OOD AUROC" in ood["text"] and ood["ood_set"] == "digits"


def test_one_seed_cannot_tell():
    tables = make_tables(seeds=[0], epsilons=(0.0, 0.2), n_test=200)
    records = study_findings(split_studies(tables)[0])
    assert one(records, "accuracy_effect", param=0.2)["direction"] == "unknown"
    assert "cannot tell" in one(records, "accuracy_effect", param=0.2)["text"]


def test_every_record_has_its_numbers():
    records = findings(epsilons=(0.0, 0.2))
    for r in records:
        assert {"id", "dataset", "model", "text"} <= set(r)
        if r["id"] not in ("answer", "miscalibration_flip", "best_method", "underconfident_methods", "method_costs"):
            assert {"estimate", "low", "high", "n", "p", "p_holm", "family_size", "direction"} <= set(r), r["id"]


def test_every_number_of_a_sentence_is_a_field():
    """No number lives only in the text: each one a sentence quotes is a field of its record
    (rounded as the sentence rounds it), apart from epochs, the margins and the Holm family's size."""
    import math
    import re

    from lsbench.findings import MARGINS, json_ready

    records = json_ready(findings(methods={"label_smoothing": [0.1, 0.3], "focal": [1.0]}, epochs=3))

    def numbers(v):
        if isinstance(v, dict):
            return [x for u in v.values() for x in numbers(u)]
        if isinstance(v, list):
            return [x for u in v for x in numbers(u)]
        return [float(v)] if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else []

    allowed = {0.95, 95.0, 0.05, *MARGINS.values(), 1.0, 2.0, 3.0, 5.0}
    for r in records:
        fields = numbers({k: v for k, v in r.items() if k != "text"})
        for token in re.findall(r"[-+−]?\d+\.?\d*(?:e-?\d+)?", r["text"].split(": ", 1)[1]):
            value = float(token.replace("−", "-"))
            digits = len(token.split(".")[1]) if "." in token and "e" not in token else None
            ok = value in allowed or any(
                math.isclose(abs(value), abs(round(f, digits))) if digits is not None
                else math.isclose(abs(value), abs(f), rel_tol=0.01) for f in fields)
            assert ok, (r["id"], token, r["text"])


def test_the_lowest_mean_compares_the_same_seeds():
    # Seed 2 diverged at eps 0.1. Over all seeds eps 0 looks best (0.0367 < 0.04) only because
    # its mean includes seed 2's low ECE; on the seeds that have both, eps 0.1 is lower.
    runs = [("cross_entropy", 0.0), ("label_smoothing", 0.1)]
    df = pd.DataFrame({"seed": [0, 1, 2, 0, 1], "method": ["cross_entropy"] * 3 + ["label_smoothing"] * 2,
                       "param": [0.0, 0.0, 0.0, 0.1, 0.1], "ece": [0.05, 0.05, 0.01, 0.04, 0.04]})
    assert lowest(df, runs, "ece") == ("label_smoothing", 0.1)
    # No seed in every run: the plain means.
    apart = df.assign(seed=[1, 2, 5, 3, 4], ece=[0.05, 0.01, 0.03, 0.04, 0.04])
    assert lowest(apart, runs, "ece") == ("cross_entropy", 0.0)
    assert select(df.assign(val_nll=[1.0, 1, 1, 0.5, 0.5]))["label_smoothing"].chosen == ("label_smoothing", 0.1)


def test_one_seed_says_so_once():
    tables = make_tables(seeds=[0], epsilons=(0.0, 0.2), n_test=200)
    for r in by_id(study_findings(split_studies(tables)[0]), "miscalibration_direction"):
        assert "(n=1, no interval)" in r["text"] and "t-interval over" not in r["text"], r["text"]


def without_runs(tables, drop):
    """`tables` without the runs (seed, param) in `drop`, from every table."""
    import dataclasses

    def keep(df):
        gone = df[["seed", "param"]].apply(tuple, axis=1).isin(drop) if len(df) else df.index == -1
        return df[~gone].reset_index(drop=True)

    return dataclasses.replace(tables, **{f.name: keep(getattr(tables, f.name)) for f in dataclasses.fields(tables)
                                          if f.name != "provenance"})


def test_unpaired_seeds_say_there_is_no_comparison():
    tables = make_tables(seeds=range(4), epsilons=(0.0, 0.2), n_test=N)
    tables = without_runs(tables, {(0, 0.2), (1, 0.2), (2, 0.0), (3, 0.0)})
    records = study_findings(split_studies(tables)[0])
    effect = one(records, "accuracy_effect", param=0.2)
    assert effect["n"] == 0 and effect["direction"] == "unknown"
    assert "no seed has a converged run at both" in effect["text"] and "nan" not in effect["text"]


def test_a_baseline_whose_runs_all_diverged_is_not_replaced():
    records = findings(epsilons=(0.0, 0.2, 0.3), diverged={(s, 0.0) for s in SEEDS})
    assert one(records, "baseline_diverged")["baseline_method"] == "cross_entropy"
    for id_ in ("method_setting", "temperature_scaling_vs_method", "accuracy_effect", "aurc_effect", "best_method"):
        assert by_id(records, id_) == []
    assert not [r for r in records if "lowest" in r["text"]]


def test_a_temperature_at_its_search_bound_cannot_tell():
    tables = make_tables(seeds=SEEDS, epsilons=(0.0, 0.1), n_test=N, sharpness=lambda e: 3.0, accuracy=lambda e: 0.6)
    # The fit's own flag decides (a T of 20 is a fit now that the search is not bounded at 20).
    tables.calibrated.loc[tables.calibrated["param"] == 0.0, "temperature_at_bound"] = True
    ts = one(study_findings(split_studies(tables)[0]), "temperature_scaling_vs_method")
    assert ts["direction"] == "unknown" and ts["runs_at_bound"] == len(SEEDS)
    assert "search bound" in ts["text"] and "better" not in ts["text"]


def test_a_difference_without_spread_is_not_certainty():
    tables = make_tables(seeds=range(2), epsilons=(0.0, 0.2), n_test=64)
    final = tables.metrics["epoch"] == tables.metrics["epoch"].max()
    for seed, acc in ((0, 0.5), (1, 0.75)):
        rows = final & (tables.metrics["seed"] == seed)
        tables.metrics.loc[rows & (tables.metrics["param"] == 0.0), "accuracy"] = acc
        tables.metrics.loc[rows & (tables.metrics["param"] == 0.2), "accuracy"] = acc + 1 / 64
    effect = one(study_findings(split_studies(tables)[0]), "accuracy_effect", param=0.2)
    assert effect["direction"] == "unknown" and effect["p"] != effect["p"]  # NaN, not 0
    assert "no spread" in effect["text"] and "raises" not in effect["text"]


def test_two_grids_claims_compared():
    from lsbench.findings import compare_claims

    a = findings(epsilons=(0.0, 0.2), accuracy=lambda e: 0.6 + e)
    assert {r["agreement"] for r in compare_claims(a, a)} == {"same"}
    b = [dict(r) for r in a]
    effect = one(b, "accuracy_effect", param=0.2)
    assert effect["direction"] == "over"
    effect["direction"] = "under"
    rows = {r["claim"]: r for r in compare_claims(a, b)}
    key = "fashion_mnist × mlp: accuracy_effect, label smoothing ε = 0.2"
    assert rows[key]["agreement"] == "contradicts" and (rows[key]["a"], rows[key]["b"]) == ("over", "under")
    effect["direction"] = "inconclusive"
    assert {r["claim"]: r for r in compare_claims(a, b)}[key]["agreement"] == "differs"
    aurc = one(a, "aurc_effect", param=0.2)["direction"]
    one(b, "aurc_effect", param=0.2)["direction"] = "unknown" if aurc != "unknown" else "none"
    agreement = {r["claim"]: r for r in compare_claims(a, b)}["fashion_mnist × mlp: aurc_effect, label smoothing ε = 0.2"]
    assert agreement["agreement"] == ("no effect either way" if aurc in ("none", "inconclusive") else "differs")
    # A claim only one grid makes differs.
    assert {r["agreement"] for r in compare_claims(a, [r for r in b if r["id"] != "best_method"])} >= {"differs"}


def test_compare_findings_on_the_command_line(tmp_path, capsys):
    import json

    from lsbench.cli import main as cli_main
    from lsbench.findings import json_ready

    records = json_ready(findings(epsilons=(0.0, 0.2)))
    (tmp_path / "a.json").write_text(json.dumps({"schema_version": 2, "metadata": {"cpu_capabilities": ["AVX2"]},
                                                 "findings": records}))
    (tmp_path / "b.json").write_text(json.dumps(records))  # schema 1: a bare list
    assert cli_main(["compare-findings", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| claim | A (AVX2) | B | agreement |") and "0 differ, 0 contradict." in out
    (tmp_path / "same.json").write_text(json.dumps({"schema_version": 2, "metadata": {}, "findings": records}))
    assert cli_main(["compare-findings", "--fail-on-difference", str(tmp_path / "a.json"), str(tmp_path / "same.json")]) == 0
    changed = [dict(r) for r in records]
    next(r for r in changed if r["id"] == "accuracy_effect")["direction"] = "over"
    changed[0]["direction"] = "under"  # cross-entropy's direction, against its own "over"
    (tmp_path / "c.json").write_text(json.dumps({"schema_version": 2, "metadata": {"seeds": [0]}, "findings": changed}))
    capsys.readouterr()
    assert cli_main(["compare-findings", "--fail-on-difference", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 1
    captured = capsys.readouterr()
    assert "make different claims" in captured.err and "contradict" in captured.out
    (tmp_path / "empty.json").write_text("[]")
    assert cli_main(["compare-findings", str(tmp_path / "a.json"), str(tmp_path / "empty.json")]) == 1
    assert "empty.json: holds no findings records" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"findings": 3}')
    assert cli_main(["compare-findings", str(tmp_path / "a.json"), str(tmp_path / "bad.json")]) == 1
    assert "bad.json: not a findings.json" in capsys.readouterr().err
    assert cli_main(["compare-findings", str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_holm_levels_follow_its_steps():
    from lsbench.findings import holm

    # Sorted p: 0.005 (x4 = 0.02, rejected), 0.01 (x3 = 0.03, rejected), 0.03 (x2 = 0.06: stop), 0.04.
    out = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert {k: v[1] for k, v in out.items()} == {"d": 4.0, "a": 3.0, "c": 2.0, "b": 2.0}
    # The first step fails (0.02 x 3 = 0.06): nothing is rejected, every level is 1 - 0.05/3, though
    # 0.022 x 1 < 0.05 alone.
    assert {v[1] for v in holm({"a": 0.02, "b": 0.021, "c": 0.022}).values()} == {3.0}


def _claim_field_sets(records):
    for r in records:
        for fields in [r, *(r.get("by_severity") or {}).values(), *(v for k, v in r.items() if k.startswith("vs_"))]:
            if isinstance(fields, dict) and "low_holm" in fields and fields.get("test") != "none":
                yield r, fields


def test_every_verdict_is_printed_with_the_interval_it_was_decided_on():
    from lsbench.findings import ALPHA, MARGINS

    records = findings(methods={"label_smoothing": [0.05, 0.3], "focal": [1.0]}, epochs=3,
                       sharpness=lambda p: 2.5 - 7.5 * p if p < 0.5 else 2.0, accuracy=lambda p: 0.8)
    seen = set()
    for r, f in _claim_field_sets(records):
        if f["low_holm"] is None or f["low_holm"] != f["low_holm"]:
            continue
        excludes = f["low_holm"] > 0 or f["high_holm"] < 0
        assert excludes == (f["p_holm"] < ALPHA), (r["id"], f)
        if f["direction"] in ("over", "under"):
            assert excludes and abs(f["estimate"]) > MARGINS[f["metric"]], (r["id"], f)
        elif excludes:  # detectable but small: never "cannot tell" beside an interval off 0 without saying why
            assert abs(f["estimate"]) <= MARGINS[f["metric"]], (r["id"], f)
        assert 95 <= f["level_holm"] < 100
        seen.add(f["direction"])
        if r["id"] in ("accuracy_effect", "aurc_effect", "miscalibration_direction"):
            assert "Holm" in r["text"] and f"{abs(f['low_holm']):.4f}" in r["text"], r["text"]
    assert {"over", "under"} <= seen
    answer = one(records, "answer")
    base = answer["baseline_overconfidence"]
    assert f"{base['low_holm']:+.4f}, {base['high_holm']:+.4f}]" in answer["sentences"][0]


def test_default_grid_effects_beyond_the_margin_keep_their_verdict():
    """The committed default grid's claims of an effect (all beyond their margin) hold under the
    rule that decides on the interval at the Holm level: a rejected test's level is at least
    1 - 0.05 / (p_holm / p) (its Holm multiplier is at most p_holm / p), and even that wider
    interval excludes 0; its estimate exceeds the margin. Non-effects stay non-effects."""
    import json
    from pathlib import Path

    from lsbench.findings import ALPHA, MARGINS, _decide
    from lsbench.stats import Interval, at_level

    doc = json.loads((Path(__file__).parents[1] / "docs/results/default-grid-avx512.findings.json").read_text())
    checked = 0
    claims = [(r, f) for r in doc["findings"]
              for f in [r, *(v for k, v in r.items() if k.startswith("vs_") and isinstance(v, dict))]]
    for r, f in claims:
        if "p" not in f or f.get("low") is None or f.get("p") is None:
            continue
        # Overconfidence's interval is clipped to [-1, 1], which its values (|x| < 0.25) never reach.
        d = Interval(f["n"], f["estimate"], f["low"], f["high"])
        if f["direction"] in ("over", "under"):
            wide = at_level(d, 1 - ALPHA / (f["p_holm"] / f["p"]))
            assert abs(f["estimate"]) > MARGINS[f["metric"]]
            assert _decide(wide, f["metric"]) == f["direction"], (r["text"], wide)
            checked += 1
        else:
            assert f["p_holm"] >= ALPHA and f["direction"] in ("none", "inconclusive", "unknown")
    assert checked >= 6


def test_one_converged_seed_gives_no_interval_and_no_ranking_in_the_answer():
    tables = make_tables(seeds=[0], epsilons=(0.0, 0.2), n_test=200)
    records = study_findings(split_studies(tables)[0])
    answer = one(records, "answer")
    assert "on its one converged seed, and one seed gives no interval" in answer["sentences"][0]
    assert "CI over 1 seeds" not in answer["text"] and "(no interval) (" not in answer["text"]
    assert "has the lowest" not in answer["text"] and "No method is ranked by ECE" in answer["text"]
    assert one(records, "best_method")["method"] is None


def test_runs_of_different_seeds_are_not_ranked():
    from lsbench.findings import rank_lowest

    runs = [("cross_entropy", 0.0), ("label_smoothing", 0.1)]
    apart = pd.DataFrame({"seed": [1, 2, 5, 3, 4], "method": ["cross_entropy"] * 3 + ["label_smoothing"] * 2,
                          "param": [0.0, 0.0, 0.0, 0.1, 0.1], "ece": [0.05, 0.01, 0.03, 0.04, 0.04]})
    ranking = rank_lowest(apart, runs, "ece")
    assert ranking.best is None and "no seed has a converged run of every one" in ranking.why
    # Seeds 0 and 1 shared: ranked on them, and a gain beyond the margin crowns label smoothing.
    shared = apart.assign(seed=[0, 1, 2, 0, 1], ece=[0.05, 0.06, 0.01, 0.04, 0.04])
    assert rank_lowest(shared, runs, "ece").best == ("label_smoothing", 0.1)
    # A gain of 0.004 (< 0.005) does not: cross-entropy stays, label smoothing is within the margin.
    close = shared.assign(ece=[0.044, 0.044, 0.01, 0.04, 0.04])
    assert rank_lowest(close, runs, "ece").tied == [("label_smoothing", 0.1)]
    assert rank_lowest(close, runs, "ece").best == ("cross_entropy", 0.0)


def test_a_grid_of_cross_entropy_alone_compares_nothing():
    tables = make_tables(seeds=range(3), epsilons=(0.0,), n_test=200)
    records = study_findings(split_studies(tables)[0])
    answer = one(records, "answer")
    assert answer["sentences"][-1] == "The grid trains cross-entropy alone, so no method is compared with it."
    assert by_id(records, "best_method") == [] and "lowest" not in answer["text"]
    assert [r["id"] for r in records] == ["answer", "miscalibration_direction"]


@functools.cache
def _findings_json() -> str:
    """One schema-2 findings document of synthetic tables (computed once: it takes seconds)."""
    import json

    from lsbench.findings import json_ready

    return json.dumps({"schema_version": 2, "metadata": {"cpu_capabilities": ["AVX2"]},
                       "findings": json_ready(findings(epsilons=(0.0, 0.2)))})


def _tampered(document: dict, change: str) -> dict | str:
    """`document` with one field changed as a hand edit (or a broken copy) would change it."""
    import copy

    doc = copy.deepcopy(document)
    first = next(r for r in doc["findings"] if r["id"] == "miscalibration_direction")
    setting = next(r for r in doc["findings"] if r["id"] == "method_setting")
    if change == "version string":
        doc["schema_version"] = "2"
    elif change == "version null":
        doc["schema_version"] = None
    elif change == "version true":
        doc["schema_version"] = True
    elif change == "metadata list":
        doc["metadata"] = []
    elif change == "capabilities of numbers":
        doc["metadata"]["cpu_capabilities"] = [2]
    elif change in ("variant", "direction"):
        del first[change]
    elif change == "setting_of":
        del setting["setting_of"]
    elif change == "epochs_checked":
        setting["direction_over_last_epochs"], setting["epochs_checked"] = "over", []
    elif change == "nested":
        return "[" * 100_000 + "]" * 100_000
    return doc


@pytest.mark.parametrize("change,needle", [
    ("version string", "schema_version: '2' is not of type 'integer'"),
    ("version null", "schema_version: None is not of type 'integer'"),
    ("version true", "schema_version: True is not of type 'integer'"),
    ("metadata list", "metadata: [] is not of type 'object'"),
    ("capabilities of numbers", "metadata.cpu_capabilities[0]: 2 is not of type 'string'"),
    ("variant", "]: 'variant' is a required property"),
    ("direction", "]: 'direction' is a required property"),
    ("setting_of", "'setting_of' is a required property"),
    ("epochs_checked", "epochs_checked: [] should be non-empty"),
    ("nested", "nested too deep to read"),
])
def test_compare_findings_names_the_field_of_a_tampered_document(tmp_path, capsys, change, needle):
    """Each was a traceback (TypeError, AttributeError, KeyError, IndexError, RecursionError)."""
    import json

    from lsbench.cli import main as cli_main

    document = json.loads(_findings_json())
    (tmp_path / "a.json").write_text(json.dumps(document))
    tampered = _tampered(document, change)
    (tmp_path / "b.json").write_text(tampered if isinstance(tampered, str) else json.dumps(tampered))
    assert cli_main(["compare-findings", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.json: not a findings.json written by lsbench report" in err, err
    assert needle in err, err


def test_a_holm_interval_of_a_difference_stays_within_the_differences_its_metric_allows():
    """Two seeds at a Holm level give t-intervals of +-5 on an ECE difference, which lies in [-1, 1]."""
    from lsbench.findings import _holm_fields
    from lsbench.stats import Interval

    wide = Interval(2, -0.0146, -0.2, 0.17)
    fields = _holm_fields(wide, 20.0, "ece")
    assert fields["low_holm"] == -1.0 and fields["high_holm"] == 1.0 and fields["level_holm"] == 99.75
    narrow = _holm_fields(Interval(5, 0.01, 0.008, 0.012), 2.0, "ece")
    assert -1 < narrow["low_holm"] < 0.008 and 0.012 < narrow["high_holm"] < 1
    assert _holm_fields(wide, 20.0)["low_holm"] < -1  # no metric named: as it is
