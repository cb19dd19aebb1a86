"""A study is one (dataset, model) pair: its slice of the published tables, and what every part of
the report (sections, findings) asks of it. No torch here."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from lsbench.config import model_slug
from lsbench.datasets import DATASETS
from lsbench.io import KEY
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

        studies.append(Study(dataset, model, runs.reset_index(drop=True), part(tables.metrics),
                             part(tables.reliability), part(tables.predictions), part(tables.calibrated),
                             part(tables.ood), part(tables.ood_predictions)))
    return studies
