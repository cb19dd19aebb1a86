"""The rendered report in a real browser: headless Chromium (Debian package), via playwright.

CI installs both (`.ci/run` apt-installs chromium; the test extra pip-installs playwright).
Set LSBENCH_SCREENSHOT_DIR to keep the full-page screenshots.
"""

import base64
import os
import struct
from pathlib import Path

import pytest

from browser import inspect_page
from lsbench.report import render, section_ids
from lsbench.tables import read_tables


def screenshot_path(tmp_path: Path, name: str) -> Path:
    return Path(os.environ.get("LSBENCH_SCREENSHOT_DIR", tmp_path)) / f"{name}.png"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def sections(report_results) -> tuple[str, ...]:
    return section_ids(read_tables(report_results))


@pytest.fixture(scope="module")
def report_html(report_results) -> str:
    return render(read_tables(report_results))


def test_report_in_chromium(report_html, sections, tmp_path):
    page = tmp_path / "index.html"
    page.write_text(report_html, encoding="utf-8")
    shot = screenshot_path(tmp_path, "report")
    result = inspect_page(page, shot)
    assert result.problems(sections) == []
    assert len(result.images) == 12  # 7 in the study, its risk-coverage, OOD and 3 shift figures
    width, height = png_size(shot)
    assert width == 1200 and height > 3000  # the whole page, not just the first screen
    # The first screen answers: overconfidence, the best setting, temperature scaling, the cost.
    answer = result.layout["answer_text"]
    for words in ("mean confidence − accuracy", "ECE", "Temperature scaling alone"):
        assert words in answer, (words, answer)
    assert len(result.layout["tables"]) >= 10 and all(t["caption"] for t in result.layout["tables"])


# Each way a report can break in a browser, and the problem the check must report for it.
TINY_PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()


def break_image(html: str) -> str:
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    return html[:start] + "AAAA" + html[start + 4:]  # corrupt the first PNG's signature


@pytest.mark.parametrize("breakage,expected", [
    (break_image, "image not decoded"),
    (lambda h: h.replace("</body>", '<img alt="remote" src="http://192.0.2.1/x.png"></body>'), "network request"),
    (lambda h: h.replace("</body>", '<link rel="stylesheet" href="style.css"></body>'), "network request"),
    (lambda h: h.replace("</body>", "<script>console.error('broken')</script></body>"), "console error"),
    (lambda h: h.replace("</body>", "<script>undefinedFunction()</script></body>"), "console error"),
    (lambda h: h.replace('<section id="fashion_mnist-mlp-reliability">', '<section id="reliability-x">'), "sections"),
    (lambda h: h.replace("</body>", f'<img alt="tiny ok" src="data:image/png;base64,{TINY_PNG}"></body>'), None),
    (lambda h: h.replace("</body>", f'<img alt="" src="data:image/png;base64,{TINY_PNG}"></body>'), "image without alt"),
    (lambda h: h.replace("</body>", '<table style="display: table"><caption>wide</caption><tr>'
                         + "<td>0.12345678901234567890</td>" * 80 + "</tr></table></body>"), "page is"),
    (lambda h: h.replace("</body>", '<div style="width: 300px; overflow: hidden"><table style="display: table; '
                         'overflow: visible"><caption>cut</caption><tr>' + "<td>0.1234567</td>" * 60
                         + "</tr></table></div></body>"), "table past the page"),
    (lambda h: h.replace("</body>", "<table><tr><td>1</td></tr></table></body>"), "table without a caption"),
    (lambda h: h.replace('<section id="answer">', '<div style="height: 2000px"></div><section id="answer">'),
     "answer not on the first screen"),
])
def test_check_catches_a_broken_report(report_html, sections, tmp_path, breakage, expected):
    page = tmp_path / "index.html"
    page.write_text(breakage(report_html), encoding="utf-8")
    problems = inspect_page(page, tmp_path / "shot.png").problems(sections)
    if expected is None:  # a valid extra image is not a problem: the check is not just always failing
        assert problems == []
    else:
        assert any(p.startswith(expected) for p in problems), problems
