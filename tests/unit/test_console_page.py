"""The console page: rendered in the user's language, every string of both languages present,
user data inert inside the boot JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from callcenter.console.api import I18N_DIR, render_console
from callcenter.users.model import Principal

JS = Path(I18N_DIR).parent / "console.js"
HTML = Path(I18N_DIR).parents[1] / "templates" / "console.html"


def principal(**kw: object) -> Principal:
    values: dict[str, object] = {
        "user_id": 4,
        "username": "agent1001",
        "display_name": "王芳",
        "role": "agent",
        "agent_interface": "PJSIP/1001",
        "csrf_token": "tok",
    }
    values.update(kw)
    return Principal(**values)  # type: ignore[arg-type]


def boot(page: str) -> dict[str, object]:
    match = re.search(r'<script id="console-boot" type="application/json">(.*?)</script>', page)
    assert match is not None
    data = json.loads(match.group(1))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("language", "title"), [("zh-CN", "坐席工作台"), ("en", "Agent console")])
def test_page_in_the_users_language(language: str, title: str) -> None:
    page = render_console(principal(language=language))
    assert f'<html lang="{language}">' in page and f"<title>{title}</title>" in page
    data = boot(page)
    assert data["language"] == language and data["csrf"] == "tok"
    assert data["user"] == {
        "id": 4,
        "username": "agent1001",
        "display_name": "王芳",
        "role": "agent",
        "agent_interface": "PJSIP/1001",
    }


def test_user_data_cannot_break_out_of_the_boot_json() -> None:
    page = render_console(principal(display_name="</script><script>alert(1)</script>"))
    assert "<script>alert(1)" not in page
    assert boot(page)["user"]["display_name"] == "</script><script>alert(1)</script>"  # type: ignore[index]


def test_both_languages_have_every_string_the_page_uses() -> None:
    en = json.loads((I18N_DIR / "console.en.json").read_text(encoding="utf-8"))
    zh = json.loads((I18N_DIR / "console.zh-CN.json").read_text(encoding="utf-8"))
    assert set(en) == set(zh)
    used = set(re.findall(r'data-t="([A-Za-z_]+)"', HTML.read_text(encoding="utf-8")))
    used |= set(re.findall(r'\bt\("([A-Za-z_]+)"\)', JS.read_text(encoding="utf-8")))
    assert used and used <= set(en), used - set(en)
    for prefix in ("state_", "pop_", "severity_"):  # keys built as prefix + value
        assert any(k.startswith(prefix) for k in en)
