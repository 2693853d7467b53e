"""Generated and hand-written docs stay in step with the code they describe.

- docs/settings.md is exactly what tools/gen_settings_doc.py generates from firmware/settings.py
  (and firmware/ocpp/config.py), and the generator's hand-written cross-check list names every
  key that Settings._cross_check reads.
- README's fault table gives each fault code the errorCode firmware/ocpp/status.py reports.
- docs/wiring.md's pin table lists every GPIO of drivers/boards/esp32-devkit.json under its
  profile key (and nothing else), and its "Profile values" table matches the profile's other
  entries.
"""
import importlib.util
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")
WIRING = os.path.join(ROOT, "docs", "wiring.md")

# profile keys that hold a GPIO number (top-level sections' own names are not pins)
_PIN_NAMES = {"pin", "sck", "mosi", "miso", "cs", "rst", "scl", "sda", "d0", "d1"}


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_settings_doc", os.path.join(ROOT, "tools", "gen_settings_doc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _profile():
    with open(PROFILE) as f:
        return json.load(f)


def _flatten(d, prefix=""):
    """{dotted.key: leaf value} of a nested dict."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _is_pin_key(key):
    last = key.rsplit(".", 1)[-1]
    return last in _PIN_NAMES or last.endswith("_pin")


def _table(text, header):
    """Rows (lists of cell strings) of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(header)] == header:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError("no table with header %s in %s" % (header, WIRING))


def _code(cell):
    m = re.fullmatch(r"`([^`]+)`", cell)
    assert m, "expected a `code` cell, got %r" % cell
    return m.group(1)


def test_settings_doc_is_current():
    gen = _gen()
    with open(gen.OUT, encoding="utf-8") as f:
        current = f.read()
    assert current == gen.generate(), "docs/settings.md is stale: " + gen.REGENERATE


def test_settings_doc_check_mode(capsys):
    assert _gen().main(["--check"]) == 0, capsys.readouterr().err


def test_every_cross_checked_key_is_described():
    gen = _gen()
    keys = gen.cross_check_keys()
    assert "ocpp_url" in keys and "temp_resume_c" in keys  # the source parse still works
    assert gen.undocumented_cross_check_keys() == [], (
        "describe these in CROSS_CHECKS in tools/gen_settings_doc.py, then " + gen.REGENERATE)


def test_every_setting_is_in_the_doc():
    gen = _gen()
    text = gen.generate()
    for key in gen.settings_mod.SCHEMA:
        assert "| `%s` |" % key in text


def test_wiring_pin_table_matches_profile():
    with open(WIRING, encoding="utf-8") as f:
        text = f.read()
    rows = _table(text, ["Part", "Signal", "GPIO", "Direction", "Profile key"])
    documented = {}
    for part, _signal, gpio, direction, key in rows:
        key = _code(key)
        assert key not in documented, "pin table lists %s twice" % key
        assert re.fullmatch(r"\d+", gpio), "GPIO cell of %s: %r" % (key, gpio)
        assert direction in ("in", "out", "analog in"), "direction of %s: %r" % (key, direction)
        documented[key] = int(gpio)
    pins = {k: v for k, v in _flatten(_profile()).items() if _is_pin_key(k) and v is not None}
    assert len(pins) >= 15  # the walk found the profile's pins
    assert documented == pins


def test_wiring_profile_values_match_profile():
    with open(WIRING, encoding="utf-8") as f:
        text = f.read()
    rows = _table(text, ["Profile key", "Value", "Meaning"])
    documented = {}
    for key, value, _meaning in rows:
        documented[_code(key)] = json.loads(_code(value))
    flat = _flatten(_profile())
    others = {k: v for k, v in flat.items()
              if k not in ("name", "description") and not (_is_pin_key(k) and v is not None)}
    assert documented == others


def test_the_readme_fault_table_gives_the_ocpp_error_code_of_every_fault():
    """README's fault table (code | OCPP errorCode) is what ocpp/status.py reports, for every
    fault code of safety.py."""
    from firmware import safety
    from firmware.ocpp import status

    with open(os.path.join(ROOT, "README.md")) as f:
        rows = re.findall(r"^\| [^|]+ \| `([a-z-]+)` \| ([A-Za-z]+)", f.read(), re.M)
    table = {code: err for code, err in rows if code not in ("flash", "grid")}  # (the station's own)
    assert set(table) == set(safety.CODES)
    assert {c: status.error_code(c) for c in safety.CODES} == table
    assert status.error_code("no-such-fault") == "OtherError"
