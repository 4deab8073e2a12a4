"""Flow/calendar validation: every error kind names file, line and node."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.ivr.loader import (
    FlowError,
    FlowLoadError,
    check_flows,
    load_flow,
    parse_calendar,
    parse_flow,
)
from callcenter.ivr.model import MenuNode, PlayNode

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
start: main
nodes:
  main:
    type: menu
    prompt: p/main
    options:
      "1": q
  q:
    type: queue
    queue: general
"""


def errors_of(text: str) -> list[FlowError]:
    flow, errors = parse_flow(text, source="f.yaml", default_name="f")
    assert flow is None
    assert errors
    assert all(e.file == "f.yaml" for e in errors)
    return errors


def only(errors: list[FlowError], code: str) -> FlowError:
    found = [e for e in errors if e.code == code]
    assert len(found) == 1, errors
    return found[0]


def test_good_flow_parses_with_lines() -> None:
    flow, errors = parse_flow(GOOD, source="f.yaml", default_name="f")
    assert errors == []
    assert flow is not None
    assert flow.name == "f" and flow.start == "main"
    main = flow.nodes["main"]
    assert isinstance(main, MenuNode)
    assert main.line == 3 and main.options == {"1": "q"}
    assert main.max_invalid == 3 and main.max_timeouts == 3 and main.timeout_ms == 5000


def test_repo_flows_are_valid() -> None:
    assert check_flows(ROOT / "ivr_flows") == []


def test_unknown_target() -> None:
    e = only(errors_of(GOOD.replace('"1": q', '"1": nowhere')), "unknown_target")
    assert (e.line, e.node) == (7, "main")
    assert "nowhere" in e.message
    assert str(e).startswith("f.yaml:7: main: ")


def test_unknown_start() -> None:
    e = only(errors_of(GOOD.replace("start: main", "start: nope")), "unknown_target")
    assert e.line == 1 and e.node is None


def test_unreachable_node() -> None:
    text = GOOD + "  orphan:\n    type: hangup\n"
    e = only(errors_of(text), "unreachable")
    assert (e.line, e.node) == (11, "orphan")


def test_no_way_out_loop() -> None:
    text = """\
start: a
nodes:
  a: {type: play, prompt: x, next: b}
  b: {type: goto, target: a}
"""
    errs = [e for e in errors_of(text) if e.code == "no_way_out"]
    assert [(e.line, e.node) for e in errs] == [(3, "a"), (4, "b")]


def test_menu_looping_to_itself_without_exit() -> None:
    text = """\
start: m
nodes:
  m:
    type: menu
    prompt: x
    options: {"1": m}
    on_exhausted: m
"""
    e = only(errors_of(text), "no_way_out")
    assert (e.line, e.node) == (3, "m")


def test_menu_without_options() -> None:
    text = GOOD.replace('    options:\n      "1": q\n', "    options: {}\n")
    errs = errors_of(text)
    e = next(x for x in errs if x.code == "no_way_out")
    assert e.node == "main" and e.line == 4


def test_duplicate_option_key() -> None:
    text = GOOD.replace('"1": q\n', '"1": q\n      "1": q\n')
    e = only(errors_of(text), "duplicate_key")
    assert (e.line, e.node) == (8, "main")


def test_duplicate_node_id() -> None:
    text = GOOD + "  q:\n    type: hangup\n"
    e = only(errors_of(text), "duplicate_key")
    assert (e.line, e.node) == (11, None)


def test_replay_key_clashes_with_option() -> None:
    text = GOOD.replace("    prompt: p/main\n", '    prompt: p/main\n    replay_key: "1"\n')
    e = only(errors_of(text), "duplicate_key")
    assert (e.line, e.node) == (6, "main")
    assert "replay_key" in e.message


def test_unknown_node_type() -> None:
    text = GOOD.replace("type: queue", "type: teleport")
    e = only(errors_of(text), "unknown_type")
    assert (e.line, e.node) == (9, "q")


def test_unknown_field() -> None:
    text = GOOD.replace("    queue: general\n", "    queue: general\n    colour: red\n")
    e = only(errors_of(text), "unknown_field")
    assert (e.line, e.node) == (11, "q")


def test_unknown_top_level_field() -> None:
    e = only(errors_of("bogus: 1\n" + GOOD), "unknown_field")
    assert (e.line, e.node) == (1, None)


def test_missing_required_field() -> None:
    text = GOOD.replace("    queue: general\n", "")
    e = only(errors_of(text), "schema")
    assert e.node == "q" and "'queue'" in e.message


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("    prompt: p/main\n", "    prompt: p/main\n    timeout: soon\n", 6),
        ("    prompt: p/main\n", "    prompt: p/main\n    timeout: 600\n", 6),
        ("    prompt: p/main\n", "    prompt: p/main\n    max_invalid: 0\n", 6),
        ("    prompt: p/main\n", '    prompt: p/main\n    operator_key: "00"\n', 6),
        ('"1": q', '"11": q', 7),
    ],
)
def test_bad_values(old: str, new: str, line: int) -> None:
    e = only(errors_of(GOOD.replace(old, new)), "bad_value")
    assert (e.line, e.node) == (line, "main")


def test_collect_checks() -> None:
    text = """\
start: c
nodes:
  c:
    type: collect
    prompt: p
    var: 9bad
    min_digits: 8
    max_digits: 4
    terminator: "*"
    next: q
  q: {type: queue, queue: g}
"""
    errs = errors_of(text)
    assert {e.line for e in errs if e.code == "bad_value"} == {6}  # var (others need the node)
    text = text.replace("9bad", "ORDER")
    errs = errors_of(text)
    assert sorted((e.line, e.node) for e in errs) == [(7, "c"), (9, "c")]


def test_language_not_in_languages() -> None:
    text = """\
start: l
languages: [zh, en]
nodes:
  l:
    type: language
    prompt: p
    options: {"1": zh, "2": fr}
    default: zh
    next: q
  q: {type: queue, queue: g}
"""
    e = only(errors_of(text), "bad_value")
    assert (e.line, e.node) == (5, "l")


def test_yaml_syntax_error_has_line() -> None:
    e = only(errors_of("start: a\nnodes:\n  a: [unclosed\n"), "yaml")
    assert e.line >= 3


def test_empty_and_non_mapping_files() -> None:
    assert only(errors_of(""), "schema").line == 1
    assert only(errors_of("- a\n- b\n"), "schema").line == 1


def test_load_flow_raises_with_all_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(GOOD.replace('"1": q', '"1": nowhere') + "  orphan: {type: hangup}\n")
    with pytest.raises(FlowLoadError) as info:
        load_flow(p)
    assert {(e.code, e.node) for e in info.value.errors} == {
        ("unknown_target", "main"),
        ("unreachable", "orphan"),
        ("unreachable", "q"),
    }
    assert all(e.file == str(p) for e in info.value.errors)


def test_load_flow_play_list(tmp_path: Path) -> None:
    p = tmp_path / "y.yaml"
    p.write_text(
        "start: a\nnodes:\n  a: {type: play, prompt: [x, y], next: b}\n  b: {type: hangup}\n"
    )
    node = load_flow(p).nodes["a"]
    assert isinstance(node, PlayNode) and node.prompts == ("x", "y")


def test_check_flows_directory(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("type: queue", "type: nope"))
    (tmp_path / "dup.yaml").write_text("name: ok\n" + GOOD)
    (tmp_path / "calendar.yaml").write_text("timezone: Mars/Olympus\n")
    (tmp_path / "latin1.yaml").write_bytes(b"start: \xe9\n")
    errs = check_flows(tmp_path)
    by_file = {(Path(e.file).name, e.code) for e in errs}
    assert by_file == {
        ("bad.yaml", "unknown_type"),
        ("ok.yaml", "duplicate_key"),
        ("calendar.yaml", "bad_timezone"),
        ("latin1.yaml", "io"),
    } or by_file == {
        ("bad.yaml", "unknown_type"),
        ("dup.yaml", "duplicate_key"),
        ("calendar.yaml", "bad_timezone"),
        ("latin1.yaml", "io"),
    }
    assert check_flows(tmp_path / "missing")[0].code == "io"


# ---------------------------------------------------------------------------------------------
# calendar validation


def cal_errors(text: str) -> list[FlowError]:
    cal, errors = parse_calendar(text, source="calendar.yaml")
    assert cal is None and errors
    return errors


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("timezone: Nowhere/City\n", "bad_timezone", 1),
        ("timezone: UTC\nweekly:\n  mon: ['25:00-26:00']\n", "bad_time", 3),
        ("timezone: UTC\nweekly:\n  mon: ['10:00-09:00']\n", "bad_time", 3),
        ("timezone: UTC\nweekly:\n  mon: ['9-17']\n", "bad_time", 3),
        ("timezone: UTC\nweekly:\n  funday: ['09:00-17:00']\n", "bad_time", 3),
        ("timezone: UTC\nweekly:\n  mon-fri: []\n  fri: []\n", "duplicate_key", 4),
        ("timezone: UTC\nweekly:\n  mon: []\n  mon: []\n", "duplicate_key", 4),
        ("timezone: UTC\nholidays:\n  - {date: 2026-02-30}\n", "bad_time", 3),
        (
            "timezone: UTC\nholidays:\n  - {date: 2026-01-01}\n  - {date: 2026-01-01}\n",
            "duplicate_key",
            4,
        ),
        ("timezone: UTC\nholidays:\n  - {date: 2026-01-01, when: x}\n", "unknown_field", 3),
        ("weekly: {}\n", "schema", 1),
        ("timezone: UTC\nopen: always\n", "unknown_field", 2),
    ],
)
def test_calendar_errors(text: str, code: str, line: int) -> None:
    e = only(cal_errors(text), code)
    assert e.line == line and e.file == "calendar.yaml"
