"""The docs' registry tables are generated (lsbench.docs_tables): stale ones fail here."""

import shutil

import pytest

from conftest import REPO
from lsbench.cli import main
from lsbench.docs_tables import DOCS, TABLES, regenerate, update


def test_the_committed_docs_tables_are_the_registries():
    assert update(REPO, check=True) == [], "run `lsbench docs` and commit the tables"
    text = "".join((REPO / d).read_text() for d in DOCS)
    for name in TABLES:  # every table stands somewhere
        assert f"<!-- generated: {name} (lsbench docs) -->" in text, name


def test_a_new_entry_makes_the_docs_stale_until_regenerated(tmp_path, monkeypatch, capsys):
    from lsbench import shifts

    for d in DOCS:
        (tmp_path / d).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / d, tmp_path / d)
    extra = shifts.Shift("pixelate", "digital", "pixelated", (1, 2, 3, 4, 5), "block", "a test", shifts.rotate)
    monkeypatch.setitem(shifts.SHIFTS, "pixelate", extra)
    assert main(["docs", "--check", "--root", str(tmp_path)]) == 1
    assert "generated tables are stale in docs/shifts.md" in capsys.readouterr().err
    assert main(["docs", "--root", str(tmp_path)]) == 0
    assert "| `pixelate` | digital | pixelated |" in (tmp_path / "docs/shifts.md").read_text()
    assert update(tmp_path, check=True) == []


def test_a_broken_block_names_the_file():
    with pytest.raises(ValueError, match="guide.md: a generated block without its end marker"):
        regenerate("<!-- generated: methods (lsbench docs) -->\n| x |\n", "guide.md")
    with pytest.raises(ValueError, match="guide.md: generated block 'colours'"):
        regenerate("<!-- generated: colours (lsbench docs) -->\nx\n<!-- end generated: colours -->", "guide.md")
