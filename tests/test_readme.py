"""The README and docs/results.md state what the default grid's findings.json says, and nothing
else: its answer sentences and the AVX2-against-AVX-512 comparison are quoted from the files in
docs/results/, which `lsbench report` wrote for the runs docs/results.md describes. The README's
examples do not overwrite the default grid's results."""

import re

import json

import yaml

from conftest import REPO
from lsbench.report import compare_findings_markdown, read_findings

RESULTS = REPO / "docs" / "results"
AVX512, AVX2 = RESULTS / "default-grid-avx512.findings.json", RESULTS / "default-grid-avx2.findings.json"


def readme() -> str:
    return (REPO / "README.md").read_text()


def results_doc() -> str:
    return (REPO / "docs" / "results.md").read_text()


def test_the_findings_are_of_the_default_grid_on_each_kernel():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path, capability in ((AVX512, "AVX512"), (AVX2, "AVX2")):
        meta = read_findings(path)["metadata"]
        assert meta["seeds"] == config["seeds"] and meta["cpu_capabilities"] == [capability]
        assert meta["correction"]["method"] == "holm"


def test_the_readme_quotes_the_answer_of_the_findings():
    answer = [r for r in read_findings(AVX512)["findings"] if r["id"] == "answer"]
    assert len(answer) == 1
    for sentence in answer[0]["sentences"]:
        assert f"> {sentence}" in readme(), sentence
        assert f"> {sentence}" in results_doc(), sentence


def test_the_readme_shows_the_comparison_the_two_findings_give():
    table = compare_findings_markdown(read_findings(AVX512), read_findings(AVX2))
    assert table in results_doc()
    # And the claim the README makes of it: no claim differs or contradicts.
    assert "0 differ, 0 contradict." in table


def test_the_readme_s_stated_family_size_is_the_findings():
    sizes = json.loads(AVX512.read_text())["metadata"]["correction"]["family_sizes"]
    assert f"over the study's {sizes['fashion_mnist/mlp']} tests" in results_doc()


SHIFTS = RESULTS / "default-grid-shifts-avx512.findings.json"


def _cell(i: dict) -> str:
    return f"{i['estimate']:.4f} [{i['low']:.4f}, {i['high']:.4f}]"


def test_the_readme_states_the_shift_findings():
    """The shift section's table, the answer's shift sentence and the quoted findings are the
    file's; the file's grid was trained again, and its clean answer is the other file's, word for word."""
    document = read_findings(SHIFTS)
    records = document["findings"]
    text = results_doc()
    pooled = next(r for r in records if r["id"] == "shift_pooled")["by_run"]
    for run in ("cross-entropy", "label smoothing ε = 0.2"):
        for metric in ("ece", "ece_ts", "accuracy"):
            row = " | ".join(_cell(pooled[run][s][metric]) for s in "0135")
            assert f"| {row} |" in text, (run, metric)
    answer = next(r for r in records if r["id"] == "answer")
    assert f"> {answer['sentences'][-1]}" in text
    clean = next(r for r in read_findings(AVX512)["findings"] if r["id"] == "answer")
    assert answer["sentences"][:-1] == clean["sentences"]
    quoted = [line[2:] for line in text.split("<!-- shift-results")[1].split("<!-- /shift-results")[0].splitlines()
              if line.startswith("> ")]
    bodies = [r["text"].split(": ", 1)[1] for r in records]
    for line in quoted[1:]:
        assert any(line == b[0].upper() + b[1:] for b in bodies), line
    size = document["metadata"]["correction"]["shift_family_sizes"]["fashion_mnist/mlp"]
    assert f"their own Holm family of {size} tests" in text
    assert document["metadata"]["cpu_capabilities"] == ["AVX512"]


def test_a_grid_with_shifts_makes_the_clean_claims_of_one_without():
    """The shift claims of a grid that evaluated shifts are not compared with a grid that did not;
    its clean claims are the same."""
    from lsbench.report import claims_differ

    a, b = read_findings(AVX512), read_findings(SHIFTS)
    table = compare_findings_markdown(a, b)
    assert not claims_differ(a, b) and "0 differ, 0 contradict." in table
    assert "shift claims not compared: only one of the two grids evaluated shifts" in table


def test_readme_examples_keep_the_default_grid_s_results():
    """Every command in the README that changes what the grid trains writes to its own
    results_dir and report_dir (given with --config, or set in the --configfile it names)."""
    import yaml

    grid_keys = set(yaml.safe_load((REPO / "config" / "config.yaml").read_text())) - {
        "device", "threads", "keep_checkpoints", "results_dir", "report_dir"}
    commands = [line.split("#")[0] for line in readme().splitlines() if line.startswith("snakemake ")]
    assert len(commands) >= 4
    for command in commands:
        keys = set(re.findall(r"\b([a-z_]+)=", command.split("--config", 1)[1])) if "--config " in command else set()
        for configfile in re.findall(r"--configfile (\S+)", command):
            keys |= set(yaml.safe_load((REPO / configfile).read_text()))
        if keys & grid_keys:
            assert {"results_dir", "report_dir"} <= keys, command
