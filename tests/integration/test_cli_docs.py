"""README and CI stay in step with the code: the settings table, and the one test command."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_generated_from_settings() -> None:
    generate = runpy.run_path(str(ROOT / "scripts" / "settings_table.py"))["settings_table"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- settings-table:.*?-->\n(.*?)\n<!-- /settings-table -->", readme, re.S)
    assert match, "README.md lost its settings-table markers"
    assert match.group(1).strip() == generate().strip(), (
        "README.md is out of date: run `python scripts/settings_table.py` and paste the table"
    )


def test_ci_ends_with_the_readme_test_command() -> None:
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    two = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", two, re.S)
    commands = [
        line for block in blocks for line in block.splitlines() if line and not line.startswith("#")
    ]
    assert len(commands) == 2, commands
    assert ci_lines[-1] == commands[1] == "scripts/check"
