"""The README's usage example runs as printed, and prints what the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_the_usage_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    printed = re.search(r"```text\n(.*?)```", text, re.DOTALL)
    assert example is not None
    assert printed is not None
    for _ in range(2):  # twice: the second start finds the first one's history
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", example.group(1)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == printed.group(1)  # what the README says it prints
