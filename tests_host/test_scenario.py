"""Scenario language: parsing, typed arguments and every error path with its line number."""
import os
import subprocess

import pytest

from world.scenario import SPEC, ScenarioError, parse, parse_duration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")


def one(line):
    r = parse(line)
    assert len(r) == 1
    return r[0]


def err(text, verbs=None):
    with pytest.raises(ScenarioError) as e:
        parse(text, verbs)
    return str(e.value)


# -- durations


@pytest.mark.parametrize("s,ms", [("500ms", 500), ("0ms", 0), ("10s", 10000), ("5m", 300000),
                                  ("1h", 3600000), ("90s", 90000)])
def test_parse_duration(s, ms):
    assert parse_duration(s) == ms


@pytest.mark.parametrize("s", ["500", "1.5s", "s", "ms", "-1s", "+1s", "10x", "10 s", "", "1d",
                               "0x10s", "1e3ms"])
def test_parse_duration_rejects(s):
    with pytest.raises(ValueError) as e:
        parse_duration(s)
    assert "duration" in str(e.value)


# -- the whole language


def test_full_script():
    text = """
# a session with a fault
plug 20          # 20 A cable
card 04a1b2c3d4
ev-ready 16 1
wait 2s

  limit 10
ev-ready 32
rcd-leak 30
rcd-leak 0
temp 72.5
temp -5
meter-noise 20
net down
net up
power-cut 30s
power-cut
plug
stop
clear-fault
"""
    r = parse(text)
    assert r == [
        (3, "plug", [20]),
        (4, "card", ["04A1B2C3D4"]),
        (5, "ev-ready", [16, 1]),
        (6, "wait", [2000]),
        (8, "limit", [10]),
        (9, "ev-ready", [32]),
        (10, "rcd-leak", [30]),
        (11, "rcd-leak", [0]),
        (12, "temp", [72.5]),
        (13, "temp", [-5.0]),
        (14, "meter-noise", [20]),
        (15, "net", ["down"]),
        (16, "net", ["up"]),
        (17, "power-cut", [30000]),
        (18, "power-cut", []),
        (19, "plug", []),
        (20, "stop", []),
        (21, "clear-fault", []),
    ]
    assert isinstance(r[8][2][0], float)


@pytest.mark.parametrize("verb", ["unplug", "ev-pause", "ev-vent", "ev-ignore-offer", "ev-steady",
                                  "rcd-broken", "rcd-ok", "weld", "diode-fault", "pilot-short",
                                  "pilot-ok", "meter-fail", "meter-ok", "stop", "clear-fault",
                                  "flash-fail", "flash-ok"])
def test_no_argument_verbs(verb):
    assert one(verb) == (1, verb, [])
    msg = err("\n" + verb + " 1")
    assert msg.startswith("line 2: " + verb + ": expected no arguments")


@pytest.mark.parametrize("amps", [13, 20, 32, 63, 70])
def test_plug_ratings(amps):
    assert one("plug %d" % amps) == (1, "plug", [amps])


def test_ev_chatter_takes_two_durations():
    assert one("ev-chatter 200ms 1s") == (1, "ev-chatter", [200, 1000])
    assert "C_TIME" in err("ev-chatter 200ms")


def test_blank_and_comments_only():
    assert parse("") == []
    assert parse("\n\n   # nothing\n\t\n#plug\n") == []


def test_crlf_and_tabs():
    assert parse("plug 32\r\n\tev-ready\t16\r\n") == [(1, "plug", [32]), (2, "ev-ready", [16])]


def test_card_limits():
    assert one("card " + "a" * 20) == (1, "card", ["A" * 20])
    assert one("card 1") == (1, "card", ["1"])


def test_verbs_restriction():
    assert parse("plug\nwait 1s", verbs=("plug", "wait")) == [(1, "plug", []), (2, "wait", [1000])]
    msg = err("plug\nnet down", verbs=("plug", "wait"))
    assert msg.startswith("line 2: unknown verb 'net'")
    assert "plug, wait" in msg
    with pytest.raises(ValueError):
        parse("plug", verbs=("plug", "teleport"))


def test_every_verb_documented_in_spec():
    assert set(SPEC) == {
        "wait", "plug", "unplug", "ev-ready", "ev-pause", "ev-vent", "ev-ignore-offer", "ev-chatter",
        "ev-steady", "card",
        "card-off", "card-broken",
        "rcd-leak", "rcd-broken", "rcd-ok", "weld", "feedback-lost", "feedback-ok", "diode-fault",
        "pilot-short", "pilot-ok",
        "temp", "meter-fail", "meter-ok", "meter-noise", "meter-address", "meter-baud", "net",
        "remote", "burst", "token", "power-cut", "power-cut-after-sent", "limit", "stop", "clear-fault",
        "flash-full", "flash-fail", "flash-ok",
        "unlock", "lock-jam", "lock-ok", "pull",
        "house", "pv", "pv-day", "grid-meter-fail", "grid-meter-ok"}


def test_a_burst_of_calls_parses_with_its_json():
    assert parse('burst 10 GetConfiguration {"key": ["A", "B"]}\nburst 2 ClearCache') == [
        (1, "burst", [10, "GetConfiguration", {"key": ["A", "B"]}]), (2, "burst", [2, "ClearCache"])]
    for bad in ("burst 1 ClearCache", "burst 51 ClearCache", "burst ten ClearCache", "burst 3"):
        with pytest.raises(ScenarioError, match="line 1: burst"):
            parse(bad)


# -- errors: each names the line, the verb and what was expected


@pytest.mark.parametrize("text,line,expect", [
    ("teleport 3", 1, "unknown verb 'teleport'"),
    ("\n\nPlug", 3, "unknown verb 'Plug'"),
    ("expect state C", 1, "unknown verb 'expect'"),
    ("wait", 1, "wait: expected 1 argument (wait DURATION), got 0"),
    ("wait 1s 2s", 1, "wait: expected 1 argument"),
    ("wait 500", 1, "wait: expected a duration like 500ms"),
    ("wait 1.5s", 1, "wait: expected a duration"),
    ("plug 16", 1, "plug: AMPS: expected one of 13, 20, 32, 63, 70, got 16"),
    ("plug x", 1, "plug: AMPS: expected an integer, got 'x'"),
    ("plug 32 1", 1, "plug: expected 0 to 1 arguments (plug [13|20|32|63|70]), got 2"),
    ("ev-ready", 1, "ev-ready: expected 1 to 2 arguments (ev-ready AMPS [1|3]), got 0"),
    ("ev-ready 0", 1, "ev-ready: AMPS: expected 1..80, got 0"),
    ("ev-ready 81", 1, "ev-ready: AMPS: expected 1..80, got 81"),
    ("ev-ready 16.5", 1, "ev-ready: AMPS: expected an integer, got '16.5'"),
    ("ev-ready 16 2", 1, "ev-ready: PHASES: expected one of 1, 3, got 2"),
    ("ev-ready 16 3 1", 1, "ev-ready: expected 1 to 2 arguments"),
    ("card", 1, "card: expected 1 argument (card UID), got 0"),
    ("card 04zz", 1, "card: UID: expected hex digits, got '04zz'"),
    ("card " + "1" * 21, 1, "card: UID: expected at most 20 hex digits, got 21"),
    ("card 01 02", 1, "card: expected 1 argument"),
    ("rcd-leak", 1, "rcd-leak: expected 1 argument (rcd-leak MILLIAMPS), got 0"),
    ("rcd-leak -1", 1, "rcd-leak: MILLIAMPS: expected 0..1000, got -1"),
    ("rcd-leak 6mA", 1, "rcd-leak: MILLIAMPS: expected an integer, got '6mA'"),
    ("temp", 1, "temp: expected 1 argument (temp CELSIUS), got 0"),
    ("temp hot", 1, "temp: CELSIUS: expected a number, got 'hot'"),
    ("temp 200", 1, "temp: CELSIUS: expected -50..150, got 200"),
    ("temp nan", 1, "temp: CELSIUS: expected -50..150, got nan"),
    ("meter-noise", 1, "meter-noise: expected 1 argument (meter-noise PERCENT), got 0"),
    ("meter-noise 101", 1, "meter-noise: PERCENT: expected 0..100, got 101"),
    ("net", 1, "net: expected 1 argument (net down|up|half-open|drop), got 0"),
    ("net sideways", 1, "net: STATE: expected down or up or half-open or drop, got 'sideways'"),
    ("remote", 1, "remote: expected 1 to 2 arguments (remote ACTION [JSON]), got 0"),
    ("remote 12", 1, "remote: ACTION: expected an OCPP action name"),
    ("remote Reset {oops", 1, "remote: JSON: expected a JSON object, got '{oops'"),
    ("remote Reset [1]", 1, "remote: JSON: expected a JSON object, got '[1]'"),
    ("power-cut 5", 1, "power-cut: expected a duration"),
    ("power-cut 1s 2s", 1, "power-cut: expected 0 to 1 arguments (power-cut [DURATION]), got 2"),
    ("limit", 1, "limit: expected 1 argument (limit AMPS), got 0"),
    ("limit -1", 1, "limit: AMPS: expected 0..80, got -1"),
    ("limit 81", 1, "limit: AMPS: expected 0..80, got 81"),
    ("stop now", 1, "stop: expected no arguments (stop), got 1"),
])
def test_errors(text, line, expect):
    msg = err(text)
    prefix = "line %d: " % line
    assert msg.startswith(prefix), msg
    assert expect in msg, msg


def test_error_line_number_counts_blank_and_comment_lines():
    text = "# header\n\nplug 32\n  # note\nwait 1s\nwait 1\n"
    assert err(text).startswith("line 6: wait: ")


def test_scenario_error_is_a_value_error():
    assert issubclass(ScenarioError, ValueError)


def test_parse_under_micropython():
    """The parser runs unchanged in the unix MicroPython port (the simulator's process)."""
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    code = (
        "from world.scenario import parse, parse_duration, ScenarioError\n"
        "r = parse('plug 20\\n# c\\ncard 04ab\\nev-ready 16 1\\ntemp 21.5\\nwait 5m\\n"
        "power-cut\\nnet up\\n')\n"
        "print(r)\n"
        "try:\n"
        "    parse('plug\\n\\ntemp 999')\n"
        "except ScenarioError as e:\n"
        "    print(e)\n"
        "try:\n"
        "    parse('limit 10\\nnet sideways', ('limit',))\n"
        "except ScenarioError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([os.path.join(ROOT, "tests_host", "fakes"), ROOT,
                                          os.path.join(ROOT, "tests_host")])
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=64K", "-c", code], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.strip().split("\n")
    assert lines[0] == ("[(1, 'plug', [20]), (3, 'card', ['04AB']), (4, 'ev-ready', [16, 1]), "
                        "(5, 'temp', [21.5]), (6, 'wait', [300000]), (7, 'power-cut', []), "
                        "(8, 'net', ['up'])]")
    assert lines[1] == "line 3: temp: CELSIUS: expected -50..150, got 999"
    assert lines[2].startswith("line 2: unknown verb 'net' (expected one of: limit)")


def test_firmware_modules_hold_no_state():
    """The simulator keeps the firmware's modules loaded across a simulated power cut (as frozen
    bytecode stays in flash), which is only right while no module keeps state of its own: no
    `global` statement and no module-level list, dict or set except UPPER_CASE constants."""
    import ast

    bad = []
    for top in ("firmware", "drivers"):
        for d, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                tree = ast.parse(open(path).read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Global):
                        bad.append("%s:%d global" % (path, node.lineno))
                for node in tree.body:
                    if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Dict, ast.Set)):
                        for t in node.targets:
                            if isinstance(t, ast.Name) and not t.id.lstrip("_").isupper():
                                bad.append("%s:%d %s" % (path, node.lineno, t.id))
    assert bad == []
