"""One version: lsbench.__version__ is what the installed metadata, the CHANGELOG's newest release,
the rules' conda env pin, `lsbench --version` and provenance.parquet say."""

import importlib.metadata
import re

from conftest import REPO
from lsbench import __version__
from lsbench.cli import build_parser
from lsbench.provenance import workflow_provenance


def test_metadata_and_changelog_agree_with_the_package():
    assert importlib.metadata.version("lsbench") == __version__  # pyproject.toml reads __version__
    releases = re.findall(r"^## (\d+\.\d+\.\d+) \(\d{4}-\d\d-\d\d\)$", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert releases[0] == __version__, releases
    assert "## Unreleased" not in (REPO / "CHANGELOG.md").read_text().split(f"## {__version__}")[0]


def test_cli_and_provenance_report_the_version(capsys):
    try:
        build_parser().parse_args(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"lsbench {__version__}"
    assert workflow_provenance(None, None)["lsbench"] == __version__


def test_every_cli_option_has_help():
    import argparse

    parser = build_parser()
    missing = []
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{sub.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_a_workflow_of_another_version_than_the_imported_lsbench_stops(tmp_path):
    import pytest

    from lsbench.config import ConfigError
    from lsbench.provenance import check_workflow_version

    check_workflow_version(str(REPO / "workflow"))  # this checkout: the same version
    check_workflow_version(str(tmp_path / "workflow"))  # no source beside it (a remote module): nothing to check
    (tmp_path / "src" / "lsbench").mkdir(parents=True)
    (tmp_path / "src" / "lsbench" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    with pytest.raises(ConfigError, match=r"is lsbench 9\.9\.9, but Python imports lsbench " + re.escape(__version__)):
        check_workflow_version(str(tmp_path / "workflow"))
