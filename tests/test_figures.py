"""The report's figures: each a `Figure` with alt text that says what it shows, reproducible SVG
and PDF beside the PNG, and the data drawn; a palette with 3:1 contrast on white; legends outside
the axes; readable bin counts; labels that name what is drawn."""

from __future__ import annotations

import re

import markupsafe
import numpy as np
import pandas as pd
import pytest

from lsbench import plots
from lsbench.figures import Figure, figure_files
from lsbench.report import replace_outputs
from lsbench.report import ood_context, render, selective_context, study_context
from lsbench.stats import Interval
from lsbench.studies import split_studies


def report_figures(tables) -> list[Figure]:
    """Every Figure of the report on `tables`: the `figures_list` of each context render() uses."""
    studies = split_studies(tables)
    contexts = [*map(selective_context, studies), *map(ood_context, studies), *map(study_context, studies)]
    return [f for c in contexts if c is not None for f in c["figures_list"]]


def luminance(color: str) -> float:
    """WCAG 2.x relative luminance of "#rrggbb", written out here, not taken from lsbench."""
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_on_white(color: str) -> float:
    return 1.05 / (luminance(color) + 0.05)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def inspect(fig) -> dict:
    """What a reader would hit in a drawn figure: legends over axes, the reliability diagrams'
    count strips, the colours of bars and of the legend entries, axis labels, y ranges."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend() is not None)]
    covered = [(i, j) for i, legend in enumerate(legends) for j, ax in enumerate(axes)
               if _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))]
    counts = []
    for ax in axes:
        for strip in ax.child_axes:
            texts = [t for t in strip.texts if t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in texts]
            counts.append({"sizes": [t.get_fontsize() for t in texts],
                           "clash": sum(_overlaps(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]),
                           "inside_axes": sum(b.y0 < ax.get_window_extent(renderer).y1 for b in boxes),
                           "n": len(texts)})
    legend_patches = {(tuple(h.get_facecolor()), h.get_hatch()) for legend in fig.legends
                      for h in legend.legend_handles if isinstance(h, plots.Patch)}
    bars = {(tuple(p.get_facecolor()), p.get_hatch()) for ax in axes for p in ax.patches
            if isinstance(p, plots.plt.Rectangle) and p.get_height() != 0}
    return {"covered": covered, "counts": counts, "legend_patches": legend_patches, "bars": bars,
            "xlabels": [ax.get_xlabel() for ax in axes], "titles": [ax.get_title() for ax in axes],
            "ylims": [ax.get_ylim() for ax in axes], "n_legends": len(legends)}


@pytest.fixture(scope="module")
def tables():
    from synthetic import make_tables

    return make_tables(seeds=(0, 1, 2), epsilons=(0.0, 0.1, 0.2))


@pytest.fixture(scope="module")
def figures(tables) -> list[Figure]:
    return report_figures(tables)


@pytest.fixture(scope="module")
def drawn(tables):
    """The report's figures, each also inspected as drawn, just before it is saved (drawing it
    first may move its legends by a pixel: these are not the bytes of the report)."""
    seen = {}
    save = plots.figure_bytes

    def inspected(fig, title=""):
        seen[title] = inspect(fig)
        return save(fig, title)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "figure_bytes", inspected)
        figures = report_figures(tables)
    return figures, seen


def test_every_figure_says_what_it_shows_and_has_its_files(tables, figures):
    names = [f.name for f in figures]
    assert len(names) == 9 and len(set(names)) == len(names)
    assert {"fashion_mnist-mlp-headline", "fashion_mnist-mlp-reliability", "fashion_mnist-mlp-selective",
            "fashion_mnist-mlp-ood"} <= set(names)
    html = render(tables)
    for f in figures:
        assert f.uri.startswith("data:image/png;base64,")
        assert f.alt.strip() and re.search(r"\d", f.alt), f.name
        assert f.svg.startswith(b"<?xml") and b"<svg" in f.svg, f.name
        assert f.pdf.startswith(b"%PDF"), f.name
        assert isinstance(f.data, pd.DataFrame) and not f.data.empty, f.name
        # The page embeds it with its own alt text, and names its files beside the report.
        assert f'<img alt="{markupsafe.escape(f.alt)}" src="{f.uri}">' in html, f.name
        assert f.files == [f"figures/{f.name}.{ext}" for ext in ("svg", "pdf", "csv")]
        assert (f'Figure files: <a href="figures/{f.name}.svg">figures/{f.name}.svg</a>, '
                f'<a href="figures/{f.name}.pdf">.pdf</a>, <a href="figures/{f.name}.csv">.csv</a>') in html
    # No date, no matplotlib version in the paper files.
    for f in figures:
        assert b"CreationDate" not in f.pdf and b"Matplotlib" not in f.pdf
        assert b"<dc:date>" not in f.svg and b"Matplotlib v" not in f.svg


def test_the_same_tables_give_the_same_bytes(tables, figures):
    again = {f.name: f for f in report_figures(tables)}
    for f in figures:
        g = again[f.name]
        assert (f.svg, f.pdf, f.uri, f.alt) == (g.svg, g.pdf, g.uri, g.alt), f.name
        assert f.csv() == g.csv()
        assert f == g  # the data is not compared (a DataFrame has no truth value), the bytes are


def test_the_alt_text_is_the_data(figures):
    figures = {f.name.removeprefix("fashion_mnist-mlp-"): f for f in figures}
    head = figures["headline"]
    means = head.data[head.data["point"] == "mean over seeds"].set_index("variant")
    for variant, row in means.iterrows():
        assert f"{variant} {row['overconfidence']:+.3f} at" in head.alt
    spread = means["accuracy"].max() - means["accuracy"].min()
    assert f"span {spread:.3f}" in head.alt
    seeds = head.data[head.data["point"] == "seed"]
    assert sorted(seeds["seed"].unique()) == [0, 1, 2] and len(seeds) == 9
    assert "negative energy" in figures["ood"].alt and "MSP" in figures["ood"].alt
    bins = figures["reliability"].data
    assert set(bins["series"]) == {"bin", "smooth (relplot)"}
    assert (bins[bins["series"] == "bin"].groupby("variant").size() == 15).all()


def test_legends_never_cover_an_axes(drawn):
    _, seen = drawn
    assert len(seen) == 9
    for name, found in seen.items():
        assert found["covered"] == [], name
    assert all(found["n_legends"] for name, found in seen.items() if not name.endswith("-confidence"))


def test_reliability_counts_are_readable_and_legend_colours_are_drawn_ones(drawn):
    found = drawn[1]["fashion_mnist-mlp-reliability"]
    assert len(found["counts"]) == 3  # one strip per run
    for strip in found["counts"]:
        assert strip["n"] > 0 and min(strip["sizes"]) >= 7
        assert strip["clash"] == 0 and strip["inside_axes"] == 0
    # Every bar drawn (accuracy, overconfident gap, underconfident gap) has its legend entry, with
    # exactly its colour and hatch; the two gaps differ.
    assert found["bars"] <= found["legend_patches"]
    over, under = plots.BAR_OVER, plots.BAR_UNDER
    assert (over["facecolor"], over["hatch"]) != (under["facecolor"], under["hatch"])
    assert len(found["bars"]) == 3  # the synthetic runs have bins on both sides of the diagonal


def test_ood_axes_name_the_negative_energy(drawn):
    found = drawn[1]["fashion_mnist-mlp-ood"]
    assert "negative energy (log-sum-exp of logits)" in found["xlabels"]
    assert "max softmax probability (MSP)" in found["xlabels"]
    assert "energy" not in found["xlabels"]


def test_accuracy_axis_does_not_magnify_a_small_gap():
    cells = {"cross-entropy": {"accuracy": Interval(3, 0.883, 0.882, 0.884),
                               "overconfidence": Interval(3, 0.049, 0.04, 0.06)},
             "label smoothing": {"accuracy": Interval(3, 0.877, 0.876, 0.878),
                                 "overconfidence": Interval(3, 0.01, 0.0, 0.02)}}
    fig, axes = plots.grid(1, 1)
    plots.accuracy_vs(cells, axes[0])
    lo, hi = axes[0].get_ylim()
    assert hi - lo >= plots.ACCURACY_MIN_SPAN - 1e-12 and lo < 0.876 and hi > 0.884
    plots.plt.close(fig)
    # Near 1 the range stays inside [0, 1].
    cells = {"a": {"accuracy": Interval(3, 0.998, 0.997, 0.999), "overconfidence": Interval(3, 0.0, -0.01, 0.01)}}
    fig, axes = plots.grid(1, 1)
    plots.accuracy_vs(cells, axes[0])
    lo, hi = axes[0].get_ylim()
    assert hi <= 1.0 and hi - lo >= plots.ACCURACY_MIN_SPAN - 1e-12
    plots.plt.close(fig)


def test_every_data_colour_has_3_to_1_contrast_on_white():
    fixed = [*plots.DATA_COLOURS, plots.BAR_ACCURACY["facecolor"], plots.BAR_OVER["facecolor"],
             plots.BAR_UNDER["facecolor"], plots.SCORE_IN["color"], plots.SCORE_OUT["color"], plots.TRUE_CLASS,
             plots.OTHER_CLASS, plots.SMOOTH["color"], plots.WILSON["color"]]
    for n in range(1, 41):
        for style in plots.palette(n):
            assert contrast_on_white(style.color) >= 3.0, style
    for color in fixed:
        assert contrast_on_white(color) >= 3.0, color
        assert plots.contrast_ratio(color) == pytest.approx(contrast_on_white(color))
    # Okabe & Ito's colour-blind-safe set, less its colours too light for white.
    assert set(plots.PALETTE) <= {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
                                  "#000000"}


def test_styles_stay_distinguishable_past_the_palette():
    styles = plots.palette(35)
    assert len({(s.color, s.marker) for s in styles}) == 35
    assert len({(s.color, s.linestyle) for s in styles[:20]}) == 20
    assert [s.color for s in styles[:5]] == list(plots.PALETTE)


def test_write_figures(figures, tmp_path):
    figures = figures[:2]
    written = replace_outputs(tmp_path / "figures", figure_files(figures))
    assert [p.name for p in written] == [f"{f.name}.{ext}" for f in figures for ext in ("svg", "pdf", "csv")]
    for f in figures:
        assert (tmp_path / "figures" / f"{f.name}.svg").read_bytes() == f.svg
        assert (tmp_path / "figures" / f"{f.name}.pdf").read_bytes() == f.pdf
        back = pd.read_csv(tmp_path / "figures" / f"{f.name}.csv")
        assert list(back.columns) == list(f.data.columns) and len(back) == len(f.data)
        numeric = f.data.select_dtypes("number").columns
        np.testing.assert_allclose(back[numeric].to_numpy(float), f.data[numeric].to_numpy(float), equal_nan=True)
    with pytest.raises(ValueError, match="repeat"):
        figure_files([figures[0], figures[0]])
