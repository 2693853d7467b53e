#!/usr/bin/env python3
"""Generate docs/settings.md from firmware/settings.py (and firmware/ocpp/config.py).

    python3 tools/gen_settings_doc.py            write docs/settings.md
    python3 tools/gen_settings_doc.py --check    exit 1 if docs/settings.md is out of date

Every row of the settings table comes straight from `SCHEMA` (key: (type, default, minimum,
maximum, flags, help)); the OCPP configuration keys come from `TABLE` in firmware/ocpp/config.py.
Only the list of cross-checks below is written by hand, because `Settings._cross_check` is code,
not data: tests_host/test_docs.py fails when a key that `_cross_check` reads is missing from it.
Needs nothing but CPython (no virtual environment).
"""
import inspect
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware import settings as settings_mod  # noqa: E402
from firmware.ocpp import config as config_mod  # noqa: E402

OUT = os.path.join(ROOT, "docs", "settings.md")
REGENERATE = "run python3 tools/gen_settings_doc.py"

# What Settings._cross_check enforces, in words: (keys it reads, the rule). Keep in step with
# firmware/settings.py; tests_host/test_docs.py checks that every key it reads is named here.
CROSS_CHECKS = (
    (("ocpp_url", "charge_box_id"), "`charge_box_id` must be set whenever `ocpp_url` is."),
    (("ocpp_url",), "`ocpp_url` must be empty or start with `ws://` or `wss://`."),
    (("wifi_ssid",), "`wifi_ssid`: at most 32 characters."),
    (("wifi_password",), "`wifi_password`: empty (open network) or 8 to 63 characters (WPA2)."),
    (("free_id_tag",), "`free_id_tag`: 1 to 20 characters (an OCPP idToken)."),
    (("energy_mode", "main_fuse_a"), "`energy_mode` `\"smart\"` needs `main_fuse_a`."),
    (("grid_fallback_a",), "`grid_fallback_a`: 0 (pause) or at least 6 A."),
    (("temp_resume_c", "temp_derate_c", "temp_shutdown_c"),
     "`temp_resume_c` < `temp_derate_c` < `temp_shutdown_c`, after every change."),
)

# Checks of single values beyond type and bounds (settings.check), also in words.
VALUE_CHECKS = (
    (("tariffs",), "`tariffs` must parse as a tariff table (firmware/tariff.py, docs/tariffs.md)."),
    (("local_tokens",), "`local_tokens`: at most 100 entries; every idTag and every group is 1 to "
                        "20 characters (a group may be `null`)."),
    (("lock_after_power_loss",), "`lock_after_power_loss`: `\"release\"` or `\"keep\"`."),
    (("energy_mode",), "`energy_mode`: `\"normal\"`, `\"smart\"` or `\"solar\"`."),
)

# An example settings file; generation fails if the firmware would refuse it.
EXAMPLE = {
    "free_charging": False,
    "max_current_a": 16,
    "wifi_ssid": "workshop",
    "ocpp_url": "ws://csms.example.net:9000/ocpp",
    "charge_box_id": "CP-0001",
}
EXAMPLE_SECRETS = {
    "wifi_password": "correct horse battery",
    "authorization_key": "0123456789abcdef0123456789abcdef",
}

_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object or null"}
_OCPP_KINDS = {"b": "boolean", "i": "integer", "c": "comma-separated list", "s": "string"}


def _cell(text):
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json(value):
    return "`%s`" % json.dumps(value)


def cross_check_keys():
    """The setting keys that Settings._cross_check reads (from its source)."""
    src = inspect.getsource(settings_mod.Settings._cross_check)
    return sorted(set(re.findall(r"""v\[["'](\w+)["']\]""", src)))


def undocumented_cross_check_keys():
    named = set()
    for keys, _rule in CROSS_CHECKS:
        named.update(keys)
    return [k for k in cross_check_keys() if k not in named]


def _settings_table():
    lines = [
        "| Key | Type | Default | Minimum | Maximum | Flags | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, (t, default, lo, hi, flags, help_text) in settings_mod.SCHEMA.items():
        lines.append("| `%s` | %s | %s | %s | %s | %s | %s |" % (
            key,
            _TYPES.get(t, t.__name__) + (" or null" if t is bool and default is None else ""),
            _json(default),
            "" if lo is None else _json(lo),
            "" if hi is None else _json(hi),
            ", ".join(flags.split()),
            _cell(help_text),
        ))
    return lines


def _flagged(flag):
    return [k for k, v in settings_mod.SCHEMA.items() if flag in v[4].split()]


def _ocpp_section():
    by_name = {}
    for row in config_mod.TABLE:
        by_name[row[0]] = row
    lines = [
        "## OCPP configuration keys",
        "",
        "Not settings: these are the OCPP 1.6 configuration keys the back end reads with",
        "GetConfiguration and changes with ChangeConfiguration. The charger keeps the changed ones in",
        "`/ocpp-config.json` (only the values that differ from the defaults). Generated from `TABLE`",
        "in `firmware/ocpp/config.py`, whose docstring says what uses each key and gives the rules",
        "(key names match in any case; read-only keys are never saved; `AuthorizationKey` is",
        "write-only and never reported). Access: *read-write*, *read-only* (for the back end) or",
        "*write-only*; *reboot* would mean the change takes effect after a restart.",
        "",
        "| Key | Type | Default | Allowed | Access |",
        "|---|---|---|---|---|",
    ]
    uses_measurands = False
    for name, kind, default, a, b, flags in config_mod.TABLE:
        if kind == "b":
            shown = _json(default)
            allowed = "`true`, `false`"
        elif kind == "i":
            shown = _json(default)
            allowed = "%d .. %d" % (a, b)
        elif kind == "c":
            shown = "`%s`" % ",".join(default) if default else '`""` (empty list)'
            if a is None:
                allowed = "any of the measurands below"
                uses_measurands = True
            else:
                allowed = "any of " + ", ".join("`%s`" % m for m in a)
            if b is not None:
                limit = by_name[b][2]
                allowed += "; at most %d items (`%s`)" % (limit, b)
        else:
            shown = _json(default) + (" (none)" if default == "" else "")
            allowed = "at most %d characters" % a
            if b == "hex":
                allowed += "; from the back end: 32 to 40 hexadecimal digits"
        access = []
        if flags & config_mod.R:
            access.append("read-only")
        if flags & config_mod.W:
            access.append("write-only")
        if not access:
            access.append("read-write")
        if flags & config_mod.B:
            access.append("reboot")
        lines.append("| `%s` | %s | %s | %s | %s |" % (
            name, _OCPP_KINDS.get(kind, kind), shown, _cell(allowed), ", ".join(access)))
    if uses_measurands:
        lines += [
            "",
            "Measurands: " + ", ".join("`%s`" % m for m in config_mod.MEASURANDS) + ".",
            "A bare `Current.Import` or `Voltage` means every phase. A station without a Modbus",
            "meter (S0 pulse input, or none) accepts fewer of them.",
        ]
    return lines


def generate():
    """The text of docs/settings.md."""
    # the example must be one the firmware accepts, or the page would mislead
    settings_mod.Settings(dict(EXAMPLE, **EXAMPLE_SECRETS))
    secrets = _flagged("secret")
    reboot = _flagged("reboot")
    lines = [
        "# Settings",
        "",
        "<!-- Generated by tools/gen_settings_doc.py from firmware/settings.py and",
        "     firmware/ocpp/config.py. Do not edit: run python3 tools/gen_settings_doc.py. -->",
        "",
        "A settings file is a JSON object holding **only the keys that differ from the defaults**.",
        "On the board it is `/settings.json`, at the root of the flash file system, next to the",
        "board profile `/board.json`. The firmware reads it at boot and checks every key: a file",
        "with an unknown key, a wrong type, a value out of bounds or a failed cross-check (below)",
        "is refused as a whole, the error names the key, the value and what was expected, and",
        "the station stays out of service (pilot at -12 V, state F) until the file is fixed.",
        "So is a file of more than %d bytes (refused before it is read: the realistic biggest," % settings_mod.MAX_FILE,
        "100 card tokens and a tariff table, has under 4 KB), one that is not UTF-8 text, not",
        "strict JSON or nested more than 32 levels deep, and one whose top level is not an object",
        "(`null` or `[]` is not \"all defaults\"). A number must be finite: NaN, `1e999` (infinity)",
        "and values below a minimum are refused like any value out of bounds.",
        "",
        "```json",
        json.dumps(EXAMPLE, indent=2),
        "```",
        "",
        "**Secrets.** Keys flagged *secret* are never printed or reported (the firmware masks",
        "them as `***`): " + ", ".join("`%s`" % k for k in secrets) + ".",
        "They come only from a local secrets file, `secrets.json` (listed in `.gitignore`, never",
        "committed): `tools/deploy.py --secrets FILE` (default `./secrets.json`) merges it into the",
        "`/settings.json` it puts on the board, and refuses a settings file that holds a secret",
        "or a secrets file that git would commit. For example:",
        "",
        "```json",
        json.dumps(EXAMPLE_SECRETS, indent=2),
        "```",
        "",
        "**Reboot.** Keys flagged *reboot* take effect after a restart of the board: "
        + ", ".join("`%s`" % k for k in reboot) + ".",
        "",
        "Types are JSON types: a *number* also accepts an integer (`16` is `16.0`); an *object or",
        "null* setting is off when `null`.",
        "",
        "## Every setting",
        "",
    ]
    lines += _settings_table()
    lines += [
        "",
        "## Checks across settings",
        "",
        "Besides type and bounds, a settings file is refused when one of these does not hold",
        "(checked on the values after the file is applied to the defaults):",
        "",
    ]
    lines += ["- " + rule for _keys, rule in CROSS_CHECKS + VALUE_CHECKS]
    lines += [""]
    lines += _ocpp_section()
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python3 tools/gen_settings_doc.py [--check]", file=sys.stderr)
        return 2
    missing = undocumented_cross_check_keys()
    if missing:
        print("Settings._cross_check reads %s, which CROSS_CHECKS in tools/gen_settings_doc.py "
              "does not describe: add the rule there, then %s"
              % (", ".join(missing), REGENERATE), file=sys.stderr)
        return 1
    text = generate()
    if args == ["--check"]:
        try:
            with open(OUT, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            what = "missing" if current is None else "out of date"
            print("docs/settings.md is %s: %s" % (what, REGENERATE), file=sys.stderr)
            return 1
        print("docs/settings.md is up to date")
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s (%d settings, %d OCPP keys)"
          % (os.path.relpath(OUT, ROOT), len(settings_mod.SCHEMA), len(config_mod.TABLE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
