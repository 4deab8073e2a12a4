"""The case desk page (callcenter.console.cases): rendering, boot data, strings, and the
page's static files (every string key exists in both languages; data is never put through
innerHTML)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from callcenter.console.cases import (
    CASES_HTML,
    COMPLAINT_ORDER,
    I18N_DIR,
    render_cases,
    staff_directory,
    strings,
    transition_table,
)
from callcenter.tickets.service import BOOKING_TRANSITIONS, COMPLAINT_TRANSITIONS
from callcenter.users.model import Principal, User

STATIC = CASES_HTML.parents[1] / "static"
JS = (STATIC / "cases.js").read_text(encoding="utf-8")
HTML = CASES_HTML.read_text(encoding="utf-8")
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def user(uid: int, role: str, *, name: str = "", disabled: bool = False) -> User:
    return User(
        id=uid,
        username=f"user{uid}",
        display_name=name,
        role=role,  # type: ignore[arg-type]
        group="complaints",
        skills=(),
        agent_interface=None,
        language="en",
        disabled=disabled,
        created_at=NOW,
        updated_at=NOW,
    )


def principal(**kw: Any) -> Principal:
    values: dict[str, Any] = {
        "user_id": 7,
        "username": "wang",
        "display_name": "Wang Fang",
        "role": "specialist",
        "language": "en",
        "csrf_token": "csrf-123",
    }
    values.update(kw)
    return Principal(**values)


def boot_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="cases-boot" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def test_both_languages_have_the_same_keys() -> None:
    en = json.loads((I18N_DIR / "cases.en.json").read_text(encoding="utf-8"))
    zh = json.loads((I18N_DIR / "cases.zh-CN.json").read_text(encoding="utf-8"))
    assert set(en) == set(zh)
    assert all(isinstance(v, str) and v for v in [*en.values(), *zh.values()])
    assert en["title"] == "Case desk" and zh["title"] == "工单台"


def test_every_string_the_page_uses_exists() -> None:
    keys = set(re.findall(r'data-t="([^"]+)"', HTML))
    keys |= set(re.findall(r'\bt\("([A-Za-z_]+)"\)', JS))
    # keys built from a prefix + a value of the domain
    for status in ("open", "investigating", "escalated", "resolved", "closed"):
        keys |= {f"cstatus_{status}"}
    for status in BOOKING_TRANSITIONS:
        keys |= {f"bstatus_{status}", *(f"act_{to}" for to in BOOKING_TRANSITIONS[status])}
    keys |= {f"act_{action}" for action in COMPLAINT_TRANSITIONS.values()}
    # the moves back to investigating are named by what they mean
    keys |= {f"move_{frm}_{to}" for (frm, to) in COMPLAINT_TRANSITIONS if to == "investigating"}
    keys -= {"move_open_investigating"}
    keys |= {f"role_{r}" for r in ("agent", "specialist", "qa", "supervisor", "admin")}
    keys |= {f"severity_{s}" for s in ("low", "medium", "high", "critical")}
    keys |= {
        f"err_{code}"
        for code in (
            "invalid_transition",
            "already_owned",
            "not_case_owner",
            "customer_not_informed",
            "outcome_required",
            "complaint_unowned",
            "validation_failed",
        )
    }
    for language in ("en", "zh-CN"):
        missing = sorted(k for k in keys if k not in strings(language))
        assert not missing, f"{language}: {missing}"


def test_script_renders_data_with_text_only() -> None:
    assert "innerHTML" not in JS and "outerHTML" not in JS and "insertAdjacentHTML" not in JS
    assert "document.write" not in JS and "eval(" not in JS
    # no external assets (no CDN): everything is served from /static
    assert not re.search(r'(src|href)="(https?:)?//', HTML)


def test_transition_table_groups_and_sorts() -> None:
    table = transition_table([("b", "z"), ("a", "y"), ("b", "c")])
    assert table == {"a": ["y"], "b": ["c", "z"]}
    assert transition_table([("a", "x"), ("a", "c"), ("a", "q")], ("q", "x")) == {
        "a": ["q", "x", "c"]  # lifecycle order first, unknown ones after by name
    }
    complaint = transition_table(COMPLAINT_TRANSITIONS, COMPLAINT_ORDER)
    assert complaint["open"] == ["investigating", "resolved"]
    assert complaint["resolved"] == ["investigating", "closed"]
    assert complaint["escalated"] == ["investigating", "resolved"]
    assert "closed" not in complaint["investigating"]


def test_staff_directory_marks_who_can_own() -> None:
    staff = staff_directory(
        [
            user(1, "agent", name="Li Na"),
            user(2, "qa", name="QA Zhou"),
            user(3, "specialist", name="Old Chen", disabled=True),
            user(4, "supervisor"),
        ]
    )
    by_id = {s["id"]: s for s in staff}
    assert by_id[1] == {
        "id": 1,
        "name": "Li Na",
        "role": "agent",
        "group": "complaints",
        "can_own": True,
    }
    assert by_id[2]["can_own"] is False  # QA reviewers never own complaints
    assert by_id[3]["can_own"] is False  # disabled
    assert by_id[4]["name"] == "user4"  # no display name: the username
    assert all("username" not in s for s in staff)


@pytest.mark.parametrize(("language", "title"), [("en", "Case desk"), ("zh-CN", "工单台")])
def test_render_in_the_users_language(language: str, title: str) -> None:
    page = render_cases(principal(language=language), [], timezone="Asia/Shanghai")
    assert f'<html lang="{language}">' in page
    assert f"<title>{title}</title>" in page
    boot = boot_of(page)
    assert boot["language"] == language
    assert boot["strings"]["title"] == title
    assert boot["csrf"] == "csrf-123"
    assert boot["timezone"] == "Asia/Shanghai"
    assert boot["user"] == {
        "id": 7,
        "display_name": "Wang Fang",
        "role": "specialist",
        "handler": False,
    }
    assert boot["complaint_transitions"] == transition_table(COMPLAINT_TRANSITIONS, COMPLAINT_ORDER)
    assert boot["booking_transitions"]["new"] == ["confirmed", "cancelled"]
    assert "fulfilled" not in boot["booking_transitions"]  # final: the script offers nothing


def test_supervisors_are_handlers() -> None:
    for role, handler in (("supervisor", True), ("admin", True), ("agent", False)):
        boot = boot_of(render_cases(principal(role=role), [], timezone="UTC"))
        assert boot["user"]["handler"] is handler


def test_hostile_names_cannot_break_out_of_the_boot_script() -> None:
    evil = '</script><script>alert("x")</script><!--'
    staff = staff_directory([user(9, "agent", name=evil)])
    page = render_cases(principal(display_name=evil), staff, timezone="UTC")
    assert evil not in page
    assert page.count("</script>") == HTML.count("</script>")
    boot = boot_of(page)
    assert boot["user"]["display_name"] == evil
    assert boot["staff"][0]["name"] == evil


def test_unknown_language_falls_back_to_chinese() -> None:
    template = "<html lang={{lang}}><title>{{title}}</title>{{boot}}"
    page = render_cases(
        principal(language="fr"),
        [],
        timezone="UTC",
        template=template,
    )
    assert page.startswith("<html lang=zh-CN><title>工单台</title>")
