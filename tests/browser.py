"""Open an HTML file in headless Chromium (Debian's /usr/bin/chromium, driven by playwright) and
report what a reader would hit: console errors, network requests, undecoded images, missing sections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("LSBENCH_CHROMIUM", "/usr/bin/chromium")

# Per image: was it loaded and decoded (naturalWidth > 0), and is it drawn with a non-zero size?
IMAGES_JS = """Array.from(document.images).map(img => ({
    alt: img.alt, src: img.src, complete: img.complete, naturalWidth: img.naturalWidth,
    width: img.getBoundingClientRect().width}))"""
# What a reader sees without scrolling, and what a 1200 px page does with its tables.
LAYOUT_JS = """(() => {
  const answers = Array.from(document.querySelectorAll('#answer p.answer'));
  const width = window.innerWidth;
  return {
    viewport: [window.innerWidth, window.innerHeight],
    page_width: document.documentElement.scrollWidth,
    first_screen_answer: answers.length > 0 && answers.every(p => p.getBoundingClientRect().bottom <= window.innerHeight),
    answer_text: answers.map(p => p.textContent).join(' '),
    tables: Array.from(document.querySelectorAll('table')).map(t => {
      const r = t.getBoundingClientRect();
      return {caption: (t.querySelector('caption') || {}).textContent || '', right: r.right, width: width,
              scroll_width: t.scrollWidth, client_width: t.clientWidth,
              overflow: getComputedStyle(t).overflowX};
    }),
  };
})()"""
SECTIONS_JS = """Array.from(document.querySelectorAll('section')).map(s => ({
    id: s.id, heading: (s.querySelector('h2, h3') || {}).textContent || '',
    height: s.getBoundingClientRect().height}))"""


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # anything fetched besides the page itself
    images: list[dict] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    layout: dict = field(default_factory=dict)

    def problems(self, expected_sections: tuple[str, ...]) -> list[str]:
        found = []
        found += [f"console error: {e}" for e in self.console_errors]
        found += [f"network request: {u}" for u in self.requests]
        if not self.images:
            found.append("no images")
        found += [f"image not decoded: {i['alt']!r} (naturalWidth {i['naturalWidth']})"
                  for i in self.images if not (i["complete"] and i["naturalWidth"] > 0 and i["width"] > 0)]
        ids = [s["id"] for s in self.sections]
        if tuple(ids) != tuple(expected_sections):
            found.append(f"sections {ids}, expected {list(expected_sections)}")
        found += [f"section {s['id']!r} is empty or has no heading" for s in self.sections
                  if not s["heading"].strip() or s["height"] <= 0]
        found += [f"image without alt text (src {i['src'][:40]}...)" for i in self.images if not i["alt"].strip()]
        return found + self.layout_problems()

    def layout_problems(self) -> list[str]:
        """The answer not on the first screen, a page wider than the window, a table past the
        page's edge or with columns that cannot be reached (cut off without a scroll bar), a table
        without a caption."""
        if not self.layout:
            return []
        lay, found = self.layout, []
        if not lay["first_screen_answer"]:
            found.append(f"answer not on the first screen ({lay['viewport'][0]}x{lay['viewport'][1]})")
        if lay["page_width"] > lay["viewport"][0]:
            found.append(f"page is {lay['page_width']} px wide in a {lay['viewport'][0]} px window")
        for t in lay["tables"]:
            name = t["caption"].strip()[:60] or "(no caption)"
            if not t["caption"].strip():
                found.append("table without a caption")
            if t["right"] > t["width"] + 0.5:
                found.append(f"table past the page's edge: {name} (right edge at {t['right']:.0f} px)")
            if t["scroll_width"] > t["client_width"] and t["overflow"] not in ("auto", "scroll"):
                found.append(f"table cut off without a scroll bar: {name}")
        return found


def inspect_page(html: Path, screenshot: Path) -> PageReport:
    """Load `html` from disk with no network, collect a PageReport, save a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    url = Path(html).resolve().as_uri()
    report = PageReport()
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # 1200 px: the narrowest page the report promises to fit; 800 px: a laptop's first screen.
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: report.console_errors.append(str(e)))
            # data: URIs are part of the file; anything else (http, other files) is a request.
            page.on("request", lambda r: None if r.url == url or r.url.startswith("data:")
                    else report.requests.append(r.url))
            page.goto(url, wait_until="load")
            report.images = page.evaluate(IMAGES_JS)
            report.sections = page.evaluate(SECTIONS_JS)
            report.layout = page.evaluate(LAYOUT_JS)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return report
