"""The package: what it shows (the API, nothing else) and its version."""

from __future__ import annotations

import pydoc
import re
import subprocess
import sys
from importlib import metadata

import pytest

import daemon_db


def test_dir_and_tab_completion_show_the_api_only() -> None:
    assert dir(daemon_db) == sorted([*daemon_db.__all__, "__version__"])
    for name in daemon_db.__all__:
        assert getattr(daemon_db, name) is not None


def test_help_documents_the_api_and_nothing_else() -> None:
    text = pydoc.render_doc(daemon_db, renderer=pydoc.plaintext)
    functions = text.split("\nFUNCTIONS\n")[1].split("\nVERSION\n")[0]
    assert re.findall(r"^    (\w+)\(", functions, re.MULTILINE) == [
        "make_unit_record_id",
        "new_run_id",
    ]  # not __getattr__ or __dir__
    assert "\nDATA\n" not in text  # no private module or helper listed as data
    assert f"\nVERSION\n    {daemon_db.__version__}\n" in text


def test_the_version_comes_from_the_package_metadata() -> None:
    assert daemon_db.__version__ == metadata.version("daemon_db")
    done = subprocess.run(
        [sys.executable, "-c", "import daemon_db; print(daemon_db.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == metadata.version("daemon_db")
    with pytest.raises(AttributeError, match="no_such_name"):
        daemon_db.no_such_name  # type: ignore[attr-defined]  # noqa: B018
