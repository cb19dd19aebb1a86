"""Findings in words, generated from the tables: each a record with its estimate, 95 % interval and
test, and a sentence that says no more than they do.

Rules (per study, over its converged runs, final epoch; a run is a (method, param) of
`lsbench.methods`; baseline = the study's cross-entropy run (`Study.baseline`), diverged runs
included: when every baseline run diverged, or a table from before 0.3 has none, there is no
comparison and no claim of an effect is made; intervals are Student-t over seeds, paired ones over
the seeds both runs share; p from the paired t-test, `lsbench.stats`):
- miscalibration_direction (per run): overconfidence = mean confidence - accuracy. Over- or
  underconfident when its interval excludes 0, else "no detectable over- or underconfidence".
- miscalibration_flip (per method): the first parameter value that is detectably underconfident
  after one (cross-entropy counting as the neutral value) that was detectably overconfident.
- method_setting (per method): the setting chosen by the lowest mean validation NLL (`select`),
  with the test-set optimum by ECE beside it, labelled as such; its ECE paired against cross-entropy.
- accuracy_effect, aurc_effect, ood_auroc_effect (per run): paired difference against cross-entropy.
- temperature_scaling_vs_method (per method, at its chosen setting): ECE of cross-entropy after
  temperature scaling against the method's ECE, paired by seed.
- best_method: the lowest mean ECE among cross-entropy and every method at its chosen setting,
  paired against label smoothing's chosen setting and against temperature scaling alone.
- underconfident_methods, method_costs: the methods whose chosen setting ends detectably
  underconfident, and those that detectably lower accuracy or raise AURC.
A difference whose interval contains 0 is "no detectable difference", never an effect. Without an
interval the sentence says the data cannot tell, and why: no seed has both runs, one pair of
seeds, or differences that do not vary over the seeds (no spread is not certainty). A temperature
fitted at its search bound (`lsbench.metrics.TEMPERATURE_BOUNDS`) in any run makes the
temperature-scaling finding "cannot tell".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lsbench.io import KEY
from lsbench.methods import CROSS_ENTROPY, METHODS, variant_label, variant_order
from lsbench.metrics import TEMPERATURE_BOUNDS, temperature_at_bound
from lsbench.stats import Interval, PairedTest, metric_interval, paired_test, rows_of, runs_in_order
from lsbench.studies import Study

Run = tuple[str, float]  # (method, param)
BASELINE: Run = (CROSS_ENTROPY, 0.0)


def _direction(i: Interval) -> str:
    """"over", "under", "none" (interval contains 0) or "unknown" (no interval)."""
    if i.n < 2 or math.isnan(i.lo):
        return "unknown"
    return "over" if i.lo > 0 else "under" if i.hi < 0 else "none"


def _ci(i: Interval, digits: int = 4) -> str:
    if i.n >= 2 and not i.constant:
        return f"{i.mean:.{digits}f} [95 % CI {i.lo:.{digits}f}, {i.hi:.{digits}f}]"
    return f"{i.mean:.{digits}f} ({_no_interval(i)})" if i.n else "(no converged run)"


def _no_interval(i: Interval, signed: bool = False, digits: int = 4) -> str:
    """Why an interval is missing, in words (n = 0, 1, or no spread)."""
    if i.n == 0:
        return "no seed has a converged run at both, so there is no comparison"
    if i.n == 1:
        return "n=1, no interval"
    value = f"{i.mean:+.{digits}f}" if signed else f"{i.mean:.{digits}f}"
    return (f"all {i.n} seeds give exactly {value}: with no spread over seeds there is no interval "
            "or t-test, and no spread is not certainty")


def _difference(d: Interval, digits: int = 4) -> str:
    """The signed paired difference (run minus baseline) with its interval, as the tables show it."""
    return f"difference {d.mean:+.{digits}f} [95 % CI {d.lo:+.{digits}f}, {d.hi:+.{digits}f}]"


def _test(t: PairedTest) -> str:
    p = "–" if math.isnan(t.p_ttest) else f"{t.p_ttest:.3g}"
    return f"paired t-test p = {p}, {t.difference.n} seeds"


def _name(run: Run) -> str:
    return variant_label(*run)


def _run_fields(run: Run, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}method": run[0], f"{prefix}param": float(run[1]), f"{prefix}variant": _name(run)}


def _record(study: Study, id_: str, text: str, **numbers: Any) -> dict[str, Any]:
    return {"id": id_, "dataset": study.dataset, "model": study.model, "text": f"{study.title}: {text}", **numbers}


def _interval_fields(i: Interval) -> dict[str, Any]:
    return {"estimate": i.mean, "low": i.lo, "high": i.hi, "n": i.n}


def _paired_fields(t: PairedTest) -> dict[str, Any]:
    return {**_interval_fields(t.difference), "p": t.p_ttest, "test": "paired t-test"}


def runs_of(df: pd.DataFrame) -> list[Run]:
    """The (method, param) runs of a frame, cross-entropy first, then in registry order."""
    return [run for run, _ in runs_in_order(df)]



def _by_seed(df: pd.DataFrame, run: Run, column: str) -> pd.Series:
    """`column` of `run` by seed, without the seeds where it is NaN (a metric a run lacks)."""
    return rows_of(df, run).set_index("seed")[column].dropna()


def paired(df: pd.DataFrame, run: Run, column: str, baseline: Run = BASELINE,
           baseline_column: str | None = None) -> PairedTest:
    """`column` of `run` minus `baseline_column` (default: the same) of `baseline`, paired by seed."""
    a, b = _by_seed(df, run, column), _by_seed(df, baseline, baseline_column or column)
    seeds = sorted(set(a.index) & set(b.index))
    return paired_test(a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float))


def lowest(df: pd.DataFrame, runs: list[Run], column: str) -> Run:
    """The run among `runs` with the lowest mean `column` over the seeds that have it for every one
    of them, so that each mean is over the same seeds (a seed that diverged in one run would
    otherwise bias the comparison); over all seeds when no seed has every run."""
    wanted = set(runs)
    part = df[[r in wanted for r in zip(df["method"], df["param"].astype(float))]]
    per_seed = part.pivot_table(index="seed", columns=["method", "param"], values=column)
    common = per_seed.dropna()
    means = (common if not common.empty else per_seed).mean()
    return min(((str(m), float(p)) for m, p in means.index), key=lambda r: (means[r], variant_order(*r)))


@dataclass(frozen=True)
class Selection:
    """A method's chosen setting: `chosen` by the lowest mean of `rule` ("val_nll", or "test_nll"
    when the tables hold no held-out NLL), and the test-set optimum by ECE, shown beside it. The
    candidates are the method's runs and, for a method with a neutral value, the cross-entropy run
    (its value 0: "this method does not help" is a possible answer)."""

    method: str
    chosen: Run
    rule: str
    test_optimum: Run
    candidates: int

    @property
    def label(self) -> str:
        """The chosen setting by the method's own name: cross-entropy as "label smoothing ε = 0.0
        (cross-entropy)"."""
        return setting_label(self.method, self.chosen)

    @property
    def test_set_choice(self) -> bool:
        return self.rule == "test_nll" and self.candidates > 1

    @property
    def rule_short(self) -> str:
        """The rule in a table cell."""
        if self.candidates == 1:
            return "its only setting"
        return "validation NLL" if self.rule == "val_nll" else "test NLL (no held-out images: a test-set choice)"

    @property
    def rule_text(self) -> str:
        if self.candidates == 1:
            return "its only setting"
        if self.rule == "val_nll":
            return "chosen by the lowest mean validation NLL (held-out training images)"
        return ("chosen by the lowest mean test NLL, a test-set choice: the tables hold no held-out NLL "
                "(validation_size 0, or tables of lsbench before 0.3)")


def setting_label(method: str, run: Run) -> str:
    """`run` named as a setting of `method`: the cross-entropy run as the method's neutral value."""
    spec = METHODS[method].param
    if run == BASELINE and method != CROSS_ENTROPY and spec is not None and spec.neutral is not None:
        return f"{variant_label(method, spec.neutral)} (cross-entropy)"
    return _name(run)


def select(df: pd.DataFrame) -> dict[str, Selection]:
    """Each method's chosen setting (not cross-entropy's own), by validation NLL (see `Selection`)."""
    out = {}
    present = runs_of(df)
    for method in dict.fromkeys(m for m, _ in present if m != CROSS_ENTROPY):
        spec = METHODS[method].param
        neutral = [BASELINE] if spec is not None and spec.neutral is not None and BASELINE in present else []
        runs = neutral + [r for r in present if r[0] == method]
        has_val = "val_nll" in df.columns and df.loc[df["method"] == method, "val_nll"].notna().any()
        rule = "val_nll" if has_val else "test_nll"
        out[method] = Selection(method, lowest(df, runs, rule), rule, lowest(df, runs, "ece"), len(runs))
    return out


def _effect(study: Study, id_: str, what: str, t: PairedTest, run: Run, up: str, down: str,
            digits: int = 4, baseline: Run = BASELINE, **extra: Any) -> dict[str, Any]:
    d = t.difference
    direction = _direction(d)
    if direction == "unknown":
        verdict = (f"cannot tell how {_name(run)} changes {what} against {_name(baseline)} "
                   f"({_no_interval(d, signed=True, digits=digits)})")
    elif direction == "none":
        verdict = (f"no detectable difference in {what} between {_name(run)} and {_name(baseline)} "
                   f"({d.mean:+.{digits}f} [95 % CI {d.lo:+.{digits}f}, {d.hi:+.{digits}f}], {_test(t)})")
    else:
        verdict = (f"{_name(run)} {up if direction == 'over' else down} {what} by {abs(d.mean):.{digits}f} against "
                   f"{_name(baseline)} ({_difference(d, digits)}, {_test(t)})")
    return _record(study, id_, verdict + ".", **_run_fields(run), **_run_fields(baseline, "baseline_"),
                   direction=direction, **_paired_fields(t), **extra)


def direction_findings(study: Study, df: pd.DataFrame) -> list[dict[str, Any]]:
    records, directions = [], {}
    for run in runs_of(df):
        i = metric_interval(rows_of(df, run)["overconfidence"].to_numpy(), "overconfidence")
        d = directions[run] = _direction(i)
        words = {"over": "overconfident: mean confidence exceeds accuracy by",
                 "under": "underconfident: mean confidence falls short of accuracy by",
                 "none": "no detectable over- or underconfidence: mean confidence minus accuracy is",
                 "unknown": "undetermined direction of miscalibration: mean confidence minus accuracy is"}[d]
        shown = Interval(i.n, abs(i.mean), -i.hi, -i.lo) if d == "under" else i
        records.append(_record(study, "miscalibration_direction",
                               f"{_name(run)}: {words} {_ci(shown)}"
                               + (f" (t-interval over {i.n} seeds)." if i.n >= 2 else "."),
                               **_run_fields(run), metric="overconfidence", direction=d, **_interval_fields(i)))
    for method in dict.fromkeys(m for m, _ in directions if m != CROSS_ENTROPY):
        spec = METHODS[method].param
        chain = ([BASELINE] if spec is not None and spec.neutral is not None and BASELINE in directions else []) \
            + [r for r in directions if r[0] == method]
        last_over = None
        for run in chain:
            if directions[run] == "over":
                last_over = run
            elif directions[run] == "under" and last_over is not None:
                records.append(_record(study, "miscalibration_flip",
                                       f"{METHODS[method].title}: miscalibration flips from overconfidence at "
                                       f"{_name(last_over)} to underconfidence at {_name(run)}.",
                                       method=method, from_param=float(last_over[1]), to_param=float(run[1]),
                                       from_variant=_name(last_over), to_variant=_name(run)))
                break
    return records


def setting_finding(study: Study, df: pd.DataFrame, s: Selection) -> dict[str, Any]:
    ece = metric_interval(rows_of(df, s.chosen)["ece"].to_numpy(), "ece")
    optimum = "" if s.candidates == 1 else (
        f"; the test-set optimum by ECE is {setting_label(s.method, s.test_optimum)}"
        + (" (the same)" if s.test_optimum == s.chosen else " (a test-set choice, shown for reference)"))
    head = f"{s.label}, {s.rule_text}{optimum}. "
    fields = {**_run_fields(s.chosen), "variant": s.label, "setting_of": s.method, "selection": s.rule,
              "candidates": s.candidates,
              **_run_fields(s.test_optimum, "test_optimum_"), "test_optimum_variant": setting_label(s.method, s.test_optimum),
              "ece": ece.mean, "ece_low": ece.lo, "ece_high": ece.hi}
    if s.chosen == BASELINE:
        text = head + (f"So {METHODS[s.method].title} does not help here: none of its other settings has a lower "
                       f"{'validation' if s.rule == 'val_nll' else 'test'} NLL than cross-entropy.")
        return _record(study, "method_setting", text, **fields, direction="none",
                       **{"estimate": 0.0, "low": 0.0, "high": 0.0, "n": ece.n, "p": math.nan, "test": "none"})
    t = paired(df, s.chosen, "ece")
    d, direction = t.difference, _direction(t.difference)
    head += f"Its ECE is {_ci(ece)}"
    if direction in ("under", "over"):
        tail = (f", {'lower' if direction == 'under' else 'higher'} than cross-entropy's by {abs(d.mean):.4f} "
                f"({_difference(d)}, {_test(t)}).")
    elif direction == "none":
        tail = f", no detectable difference from cross-entropy ({d.mean:+.4f} [95 % CI {d.lo:+.4f}, {d.hi:+.4f}], {_test(t)})."
    else:
        tail = f"; the data cannot tell it from cross-entropy ({_no_interval(d, signed=True)})."
    return _record(study, "method_setting", head + tail, **fields, direction=direction, **_paired_fields(t))


def _ts_at_bound(df: pd.DataFrame) -> int:
    return int(temperature_at_bound(rows_of(df, BASELINE)["temperature"]).sum())


def temperature_finding(study: Study, df: pd.DataFrame, run: Run) -> dict[str, Any] | None:
    if rows_of(df, BASELINE)["ece_ts"].isna().all():
        return None
    t = paired(df, BASELINE, "ece_ts", run, baseline_column="ece")
    d, direction = t.difference, _direction(t.difference)
    ts = metric_interval(_by_seed(df, BASELINE, "ece_ts").to_numpy(), "ece_ts")
    head = f"temperature scaling alone (cross-entropy's ECE after scaling, {_ci(ts)}) against {_name(run)}: "
    fields = {**_run_fields(run), "direction": direction, **_paired_fields(t)}
    at_bound = _ts_at_bound(df)
    if at_bound:
        low, high = TEMPERATURE_BOUNDS
        tail = (f"cannot tell: the fitted temperature hit its search bound ({low:g} or {high:g}) in {at_bound} of "
                f"{len(rows_of(df, BASELINE))} runs, so the held-out images did not determine it (too few of them?).")
        return _record(study, "temperature_scaling_vs_method", head + tail,
                       **{**fields, "direction": "unknown"}, runs_at_bound=at_bound)
    if direction == "under":
        tail = f"temperature scaling is better by {abs(d.mean):.4f} ({_difference(d)}, {_test(t)})."
    elif direction == "over":
        tail = f"{_name(run)} is better by {d.mean:.4f} ({_difference(d)}, {_test(t)})."
    elif direction == "none":
        tail = f"no detectable difference ({d.mean:+.4f} [95 % CI {d.lo:+.4f}, {d.hi:+.4f}], {_test(t)})."
    else:
        tail = f"the data cannot tell them apart ({_no_interval(d, signed=True)})."
    return _record(study, "temperature_scaling_vs_method", head + tail, **fields, runs_at_bound=0)


def best_method_finding(study: Study, df: pd.DataFrame, chosen: dict[str, Selection]) -> dict[str, Any]:
    """The lowest mean test ECE among cross-entropy and each method's chosen setting, against
    cross-entropy, label smoothing's chosen setting and temperature scaling alone (paired tests)."""
    candidates = list(dict.fromkeys([BASELINE, *(s.chosen for s in chosen.values())]))
    best = lowest(df, candidates, "ece")
    ece = metric_interval(rows_of(df, best)["ece"].to_numpy(), "ece")
    parts = [f"of cross-entropy and every method at its chosen setting, {_name(best)} has the lowest mean test ECE, "
             f"{_ci(ece)}"]
    fields: dict[str, Any] = {**_run_fields(best), "ece": ece.mean, "ece_low": ece.lo, "ece_high": ece.hi,
                              "n": ece.n, "compared": [_name(r) for r in candidates],
                              "test_set_choices": [s.method for s in chosen.values() if s.test_set_choice]}
    if best != BASELINE:
        t = paired(df, best, "ece")
        fields["vs_cross_entropy"] = {"direction": _direction(t.difference), **_paired_fields(t)}
        parts.append(f"against cross-entropy: {_verdict(t)}")
        acc = paired(df, best, "accuracy")
        if _direction(acc.difference) in ("under", "over"):
            parts.append(f"it also {'lowers' if _direction(acc.difference) == 'under' else 'raises'} accuracy "
                         f"({_difference(acc.difference)}, {_test(acc)})")
    ls = chosen.get("label_smoothing")
    if ls is not None and best != ls.chosen:
        t = paired(df, best, "ece", ls.chosen)
        fields["vs_label_smoothing"] = {**_run_fields(ls.chosen), "direction": _direction(t.difference),
                                        **_paired_fields(t)}
        parts.append(f"against label smoothing's chosen {ls.label}: {_verdict(t)}")
    if not rows_of(df, BASELINE)["ece_ts"].isna().all() and not _ts_at_bound(df):
        t = paired(df, best, "ece", BASELINE, baseline_column="ece_ts")
        fields["vs_temperature_scaling"] = {"direction": _direction(t.difference), **_paired_fields(t)}
        parts.append(f"against temperature scaling alone: {_verdict(t)}")
    if fields["test_set_choices"]:
        parts.append("the settings of " + ", ".join(fields["test_set_choices"]) + " are test-set choices (no "
                     "held-out NLL in the tables), so this comparison favours them")
    return _record(study, "best_method", "; ".join(parts) + ".", **fields)


def _verdict(t: PairedTest) -> str:
    d, direction = t.difference, _direction(t.difference)
    if direction == "unknown":
        return f"cannot tell ({_no_interval(d, signed=True)})"
    if direction == "none":
        return f"no detectable difference ({d.mean:+.4f} [95 % CI {d.lo:+.4f}, {d.hi:+.4f}], {_test(t)})"
    return f"{'lower' if direction == 'under' else 'higher'} by {abs(d.mean):.4f} ({_difference(d)}, {_test(t)})"


def summary_findings(study: Study, records: list[dict[str, Any]], chosen: dict[str, Selection]) -> list[dict]:
    """Which methods end underconfident at their chosen setting, which cost accuracy or AURC."""
    picked = {s.chosen for s in chosen.values()} - {BASELINE}  # cross-entropy is no method's setting to list

    def hits(id_: str, direction: str) -> list[str]:
        return [r["variant"] for r in records if r["id"] == id_ and (r["method"], r["param"]) in picked
                and r["direction"] == direction]

    under = hits("miscalibration_direction", "under")
    lower_acc, higher_aurc = hits("accuracy_effect", "under"), hits("aurc_effect", "over")
    out = [_record(study, "underconfident_methods",
                   ("at their chosen settings, detectably underconfident (conf − acc < 0): " + ", ".join(under))
                   if under else "no method is detectably underconfident at its chosen setting.",
                   variants=under, n=len(under))]
    costs = [f"{v} lowers accuracy" for v in lower_acc] + [f"{v} raises AURC" for v in higher_aurc]
    out.append(_record(study, "method_costs",
                       ("against cross-entropy, at their chosen settings: " + "; ".join(costs))
                       if costs else "no method at its chosen setting detectably lowers accuracy or raises AURC "
                                     "against cross-entropy.",
                       lower_accuracy=lower_acc, higher_aurc=higher_aurc, n=len(costs)))
    return out


def ood_frame(study: Study, score: str = "msp") -> pd.DataFrame:
    return study.ood[study.ood["score"] == score].merge(study.converged_runs(), on=KEY)


def study_findings(study: Study) -> list[dict[str, Any]]:
    """Every finding for one study; none when all its runs diverged."""
    df = study.converged()
    if df.empty:
        return [_record(study, "all_diverged", "every run diverged; there is nothing to conclude.")]
    records = direction_findings(study, df)
    if rows_of(df, BASELINE).empty:
        why = ("every cross-entropy run diverged" if not rows_of(study.runs, BASELINE).empty
               else "the study has no cross-entropy run (a grid of lsbench before 0.3 without ε = 0)")
        return records + [_record(study, "baseline_diverged",
                                  f"{why}, so nothing can be compared with it: no claim of an effect of a method, "
                                  "of a best setting or of temperature scaling alone is made.",
                                  **_run_fields(BASELINE, "baseline_"))]
    others = [r for r in runs_of(df) if r != BASELINE]
    chosen = select(df)
    records += [setting_finding(study, df, s) for s in chosen.values()]
    effects = [_effect(study, "accuracy_effect", "accuracy", paired(df, r, "accuracy"), r, "raises", "lowers")
               for r in others]
    effects += [_effect(study, "aurc_effect", "AURC (risk–coverage with the max probability; lower is better)",
                        paired(df, r, "aurc"), r, "raises", "lowers") for r in others]
    ood = ood_frame(study)
    if not ood.empty:
        what = f"OOD AUROC (max probability, {study.dataset} against {study.ood_set})"
        effects += [_effect(study, "ood_auroc_effect", what, paired(ood, r, "auroc"), r, "raises", "lowers",
                            ood_set=study.ood_set, score="msp") for r in others]
    records += effects
    records += [ts for s in chosen.values() if s.chosen != BASELINE and (ts := temperature_finding(study, df, s.chosen))]
    if chosen:
        records.append(best_method_finding(study, df, chosen))
        records += summary_findings(study, records, chosen)
    return records


def json_ready(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN and NumPy scalars as JSON has them: null and plain numbers (nested ones too)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return None if math.isnan(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return [{k: clean(v) for k, v in r.items()} for r in records]
