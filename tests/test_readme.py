"""The README states what the default grid's findings.json says, and nothing else: its answer
sentences and the AVX2-against-AVX-512 comparison are quoted from the files in docs/results/,
which `lsbench report` wrote for the runs the README describes."""

import json

import yaml

from conftest import REPO
from lsbench.report import compare_findings_markdown, read_findings

RESULTS = REPO / "docs" / "results"
AVX512, AVX2 = RESULTS / "default-grid-avx512.findings.json", RESULTS / "default-grid-avx2.findings.json"


def readme() -> str:
    return (REPO / "README.md").read_text()


def test_the_findings_are_of_the_default_grid_on_each_kernel():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path, capability in ((AVX512, "AVX512"), (AVX2, "AVX2")):
        meta = read_findings(path)["metadata"]
        assert meta["seeds"] == config["seeds"] and meta["cpu_capabilities"] == [capability]
        assert meta["correction"]["method"] == "holm"


def test_the_readme_quotes_the_answer_of_the_findings():
    answer = [r for r in read_findings(AVX512)["findings"] if r["id"] == "answer"]
    assert len(answer) == 1
    for sentence in answer[0]["sentences"]:
        assert f"> {sentence}" in readme(), sentence


def test_the_readme_shows_the_comparison_the_two_findings_give():
    table = compare_findings_markdown(read_findings(AVX512), read_findings(AVX2))
    assert table in readme()
    # And the claim the README makes of it: no claim differs or contradicts.
    assert "0 differ, 0 contradict." in table


def test_the_readme_s_stated_family_size_is_the_findings():
    sizes = json.loads(AVX512.read_text())["metadata"]["correction"]["family_sizes"]
    assert f"over the study's {sizes['fashion_mnist/mlp']} tests" in readme()
