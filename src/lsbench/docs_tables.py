"""The docs' tables of datasets, models, methods and shifts, generated from their registries.

Each table stands in a Markdown file between two markers,

    <!-- generated: NAME (lsbench docs) -->
    ...
    <!-- end generated: NAME -->

and `lsbench docs` rewrites what is between them; `lsbench docs --check` (run by the tests) fails
naming every stale file, so a new registry entry cannot leave the docs behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

BEGIN = "<!-- generated: {name} (lsbench docs) -->"
END = "<!-- end generated: {name} -->"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows])


def datasets_table() -> str:
    from lsbench.datasets import DATASETS

    return _table(["dataset", "name in the report", "image (C × H × W)", "classes", "train / test images",
                   "format", "folder under data_root"],
                  [[f"`{d.name}`", d.title, " × ".join(map(str, d.image_shape)), str(d.num_classes),
                    f"{d.sizes[0]:,} / {d.sizes[1]:,}", d.layout, f"`{d.subdir}/`" if d.subdir else "none (bundled)"]
                   for d in DATASETS.values()])


def models_table() -> str:
    import inspect

    from lsbench.models import MODELS

    def summary(builder: Callable) -> str:
        doc = inspect.getdoc(builder) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    return _table(["model", "what it is"], [[f"`{name}`", summary(b)] for name, b in MODELS.items()])


def methods_table() -> str:
    from lsbench.methods import METHODS, format_param

    def parameter(m) -> str:
        if m.param is None:
            return "none"
        neutral = "" if m.param.neutral is None else f"; {format_param(m.param.neutral)} is cross-entropy"
        return f"{m.param.name} {m.param.symbol} in {m.param.range_text}{neutral}"

    return _table(["method", "name in the report", "parameter, range", "fixed", "source"],
                  [[f"`{m.name}`", m.title, parameter(m), "; ".join(f"{k} {v}" for k, v in m.fixed.items()) or "",
                    m.source] for m in METHODS.values()])


def shifts_table() -> str:
    from lsbench.shifts import markdown_table

    return markdown_table()  # the shift registry's own rendering of itself


TABLES: dict[str, Callable[[], str]] = {"datasets": datasets_table, "models": models_table,
                                        "methods": methods_table, "shifts": shifts_table}
# Where each table stands, relative to the repository's root.
DOCS = ("docs/guide.md", "docs/shifts.md")


def regenerate(text: str, where: str = "") -> str:
    """`text` with every generated block rewritten from the registries.

    Raises:
        ValueError: a block names no known table, or has no end marker (naming `where`).
    """
    pattern = re.compile(r"<!-- generated: (\w+) \(lsbench docs\) -->\n(.*?)<!-- end generated: (\w+) -->",
                         re.S)

    def block(m: re.Match) -> str:
        name = m.group(1)
        if name not in TABLES or m.group(3) != name:
            raise ValueError(f"{where}: generated block {name!r}: ends as {m.group(3)!r}; tables: {', '.join(TABLES)}")
        return f"{BEGIN.format(name=name)}\n{TABLES[name]()}\n{END.format(name=name)}"

    if text.count("<!-- generated: ") != text.count("<!-- end generated: "):
        raise ValueError(f"{where}: a generated block without its end marker")
    return pattern.sub(block, text)


def update(root: Path, check: bool = False) -> list[str]:
    """Rewrite the generated blocks of `DOCS` under `root` (with `check`, only compare); the files
    that were (or, with `check`, would be) changed."""
    stale = []
    for name in DOCS:
        path = root / name
        text = path.read_text(encoding="utf-8")
        new = regenerate(text, name)
        if new != text:
            stale.append(name)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale
