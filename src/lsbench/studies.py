"""A study is one (dataset, model) pair: its slice of the published tables, and what every part of
the report (sections, findings) asks of it. No torch here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from lsbench.config import model_slug
from lsbench.datasets import DATASETS
from lsbench.io import GALLERY, KEY, SHIFT, SHIFT_COLUMNS
from lsbench.methods import variant_label
from lsbench.stats import runs_in_order
from lsbench.tables import Tables, final_epoch  # noqa: F401 - final_epoch is used here and re-exported

STUDY = ["dataset", "model"]


def study_slug(dataset: str, model: str) -> str:
    return f"{dataset}-{model_slug(model)}"


@dataclass(frozen=True)
class Study:
    """One (dataset, model) pair's tables."""

    dataset: str
    model: str
    runs: pd.DataFrame
    metrics: pd.DataFrame
    reliability: pd.DataFrame
    predictions: pd.DataFrame
    calibrated: pd.DataFrame
    ood: pd.DataFrame
    ood_predictions: pd.DataFrame
    # shift.parquet's rows of this study (empty without shifts) and the dataset's gallery images.
    shift: pd.DataFrame = field(default_factory=pd.DataFrame)
    shift_gallery: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def slug(self) -> str:
        return study_slug(self.dataset, self.model)

    @property
    def title(self) -> str:
        spec = DATASETS.get(self.dataset)
        return f"{spec.title if spec else self.dataset} × {self.model}"

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.runs["class_names"].iloc[0])

    @property
    def num_classes(self) -> int:
        return int(self.runs["num_classes"].iloc[0])

    @property
    def ood_set(self) -> str:
        return str(self.runs["ood_set"].iloc[0])

    @property
    def variants(self) -> list[tuple[str, float]]:
        """The study's (method, param) runs, cross-entropy (the baseline) first, then in the
        registry's order (`lsbench.methods.variant_order`), diverged ones included."""
        return [run for run, _ in runs_in_order(self.runs)]

    def final(self) -> pd.DataFrame:
        return final_epoch(self.metrics)

    def converged(self) -> pd.DataFrame:
        """Final-epoch rows of the runs that did not diverge, with their calibrated columns."""
        final = self.final()
        return final[~final["diverged"]].merge(self.calibrated, on=KEY).reset_index(drop=True)

    def converged_runs(self) -> pd.DataFrame:
        return self.converged()[KEY]

    def shifted(self) -> pd.DataFrame:
        """shift.parquet's rows of the converged runs (diverged runs have no metrics to pool)."""
        if self.shift.empty:
            return self.shift
        return self.shift.merge(self.converged_runs(), on=KEY).reset_index(drop=True)

    def shift_pooled(self) -> pd.DataFrame:
        """Per converged run, seed and severity the mean over the shifts of every metric (severity 0:
        the unshifted subset): the pooled curves of Ovadia et al. 2019, Fig. 2, and what the shift
        findings test, paired by seed."""
        df = self.shifted()
        if df.empty:
            return df
        metrics = [c for c in SHIFT_COLUMNS if c not in (*KEY, "shift", "severity", "n_images")]
        return df.groupby([*KEY, "severity"], as_index=False)[metrics].mean()


def by_variant(df: pd.DataFrame) -> list[tuple[tuple[str, float], str, pd.DataFrame]]:
    """[((method, param), label, rows)] of a frame's runs, in `variant_order`: how every table
    and figure of the report lists a study's methods."""
    return [(run, variant_label(*run), g) for run, g in runs_in_order(df)]


def split_studies(tables: Tables) -> list[Study]:
    """The tables of each (dataset, model), sorted by dataset then model."""
    studies = []
    for (dataset, model), runs in tables.runs.groupby(STUDY, sort=True):
        def part(df: pd.DataFrame) -> pd.DataFrame:
            return df[(df["dataset"] == dataset) & (df["model"] == model)].reset_index(drop=True)

        shift, gallery = getattr(tables, SHIFT), getattr(tables, GALLERY)
        studies.append(Study(dataset, model, runs.reset_index(drop=True), part(tables.metrics),
                             part(tables.reliability), part(tables.predictions), part(tables.calibrated),
                             part(tables.ood), part(tables.ood_predictions),
                             part(shift) if len(shift) else pd.DataFrame(columns=SHIFT_COLUMNS),
                             gallery[gallery["dataset"] == dataset].reset_index(drop=True)))
    return studies
