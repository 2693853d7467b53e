"""Scenario scripts: one action per line, `#` starts a comment, blank lines are ignored.

    plug 32            # cable rating 13/20/32/63/70 A (default: the world's, 32)
    card 04A1B2C3
    ev-ready 16 3
    wait 30s
    unplug

    house 8 2.5 4      # household load per phase, A (world/grid.py)
    pv-day clouds 9000 1                               # PV: a 1-hour day peaking at 9 kW

    remote RemoteStartTransaction {"idTag": "CARD1"}   # the back end sends a command
    burst 10 GetConfiguration {}                       # ... that many, back to back

`parse(text, verbs=None)` -> list of (lineno, verb, args) with typed args (ints, floats for
`temp`, `house` and pv-day's HOURS, strings for `card` and `net`, a dict for the JSON of `remote` and `burst`, the rest of its line, which
therefore can not hold a `#`); optional arguments that are left out are not filled in.
`verbs` restricts the accepted verbs to those names (a runner that supports only part of the
language). Errors raise ScenarioError("line N: VERB: ...") naming the line, the verb and what
was expected. Durations (`parse_duration`): an integer and a unit, ms, s, m or h -> ms.
"""


class ScenarioError(ValueError):
    pass


_UNITS = (("ms", 1), ("s", 1000), ("m", 60000), ("h", 3600000))
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"
CABLE_AMPS = (13, 20, 32, 63, 70)


def _is_int(s):
    if s[:1] == "-" or s[:1] == "+":
        s = s[1:]
    if not s:
        return False
    for c in s:
        if c not in _DIGITS:
            return False
    return True


def parse_duration(s):
    """'500ms', '10s', '5m', '1h' -> milliseconds (int). ValueError otherwise."""
    for unit, mult in _UNITS:
        if s.endswith(unit):
            num = s[:-len(unit)]
            if num and _is_int(num) and num[0] in _DIGITS:
                return int(num) * mult
            break
    raise ValueError("expected a duration like 500ms, 10s, 5m or 1h (whole numbers), got %r"
                     % (s,))


# argument kinds: (name, kind, optional, extra)
def _int_in(name, lo, hi, optional=False):
    return (name, "int", optional, (lo, hi))


def _choice(name, values, optional=False):
    return (name, "choice", optional, values)


SPEC = {
    "wait": (("DURATION", "duration", False, None),),
    "plug": (_choice("AMPS", CABLE_AMPS, True),),
    "unplug": (),
    "ev-ready": (_int_in("AMPS", 1, 80), _choice("PHASES", (1, 3), True)),
    "ev-pause": (),
    "ev-vent": (),
    "ev-ignore-offer": (),
    "ev-chatter": (("B_TIME", "duration", False, None), ("C_TIME", "duration", False, None)),
    "ev-steady": (),
    "card": (("UID", "hex", False, 20),),
    "card-off": (),
    "card-broken": (("KIND", "word", False, ("crc", "bcc", "collision", "parity", "removed",
                                             "checksum", "lcs", "nack", "error", "noanswer",
                                             "bits")),),
    "rcd-leak": (_int_in("MILLIAMPS", 0, 1000),),
    "rcd-broken": (),
    "rcd-ok": (),
    "weld": (),
    "feedback-lost": (),
    "feedback-ok": (),
    "diode-fault": (),
    "pilot-short": (),
    "pilot-ok": (),
    "temp": (("CELSIUS", "float", False, (-50.0, 150.0)),),
    "meter-fail": (),
    "meter-ok": (),
    "meter-noise": (_int_in("PERCENT", 0, 100),),
    "meter-address": (_int_in("ADDRESS", 1, 247),),
    "meter-baud": (_choice("BAUD", (1200, 2400, 4800, 9600, 19200, 38400)),),
    "net": (("STATE", "word", False, ("down", "up", "half-open", "drop")),),
    "remote": (("ACTION", "name", False, None), ("JSON", "json", True, None)),
    "burst": (_int_in("COUNT", 2, 50), ("ACTION", "name", False, None), ("JSON", "json", True, None)),
    "token": (("IDTAG", "idtag", False, None),
              ("STATUS", "word", True, ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")),
              ("PARENT", "idtag", True, None)),
    "power-cut": (("DURATION", "duration", True, None),),
    "power-cut-after-sent": (_int_in("MESSAGES", 1, 1000000), ("DURATION", "duration", True, None)),
    "flash-full": (_int_in("FREE_BYTES", 0, 0x200000, True),),
    "flash-fail": (),
    "flash-ok": (),
    "limit": (_int_in("AMPS", 0, 80),),
    "stop": (),
    "clear-fault": (),
    "unlock": (),
    "lock-jam": (),
    "lock-ok": (),
    "pull": (),
    "house": (("L1", "float", False, (0.0, 100.0)), ("L2", "float", False, (0.0, 100.0)),
              ("L3", "float", False, (0.0, 100.0))),
    "pv": (_int_in("WATTS", 0, 50000),),
    "pv-day": (("PROFILE", "word", False, ("clear", "clouds")), _int_in("PEAK_W", 0, 50000, True),
               ("HOURS", "float", True, (0.01, 24.0))),
    "grid-meter-fail": (),
    "grid-meter-ok": (),
}


def _usage(verb):
    parts = [verb]
    for name, kind, optional, extra in SPEC[verb]:
        if kind == "word" or kind == "choice":
            name = "|".join([str(x) for x in extra])
        parts.append("[" + name + "]" if optional else name)
    return " ".join(parts)


def _convert(verb, name, kind, extra, tok):
    """Typed value of tok, or raise ValueError with what was expected."""
    if kind == "duration":
        return parse_duration(tok)
    if kind == "int" or kind == "choice":
        if not _is_int(tok):
            raise ValueError("%s: expected an integer, got %r" % (name, tok))
        v = int(tok)
        if kind == "choice":
            if v not in extra:
                raise ValueError("%s: expected one of %s, got %d"
                                 % (name, ", ".join([str(x) for x in extra]), v))
        elif v < extra[0] or v > extra[1]:
            raise ValueError("%s: expected %d..%d, got %d" % (name, extra[0], extra[1], v))
        return v
    if kind == "float":
        try:
            v = float(tok)
        except ValueError:
            raise ValueError("%s: expected a number, got %r" % (name, tok))
        if not (extra[0] <= v <= extra[1]):  # also rejects nan
            raise ValueError("%s: expected %g..%g, got %s" % (name, extra[0], extra[1], tok))
        return v
    if kind == "hex":
        if len(tok) > extra:
            raise ValueError("%s: expected at most %d hex digits, got %d"
                             % (name, extra, len(tok)))
        for c in tok:
            if c not in _HEX:
                raise ValueError("%s: expected hex digits, got %r" % (name, tok))
        return tok.upper()
    if kind == "idtag":
        if len(tok) > 20:
            raise ValueError("%s: expected at most 20 characters (OCPP idToken), got %d" % (name, len(tok)))
        return tok
    if kind == "name":
        if not tok[:1].isalpha() or not tok.isalpha():
            raise ValueError("%s: expected an OCPP action name like RemoteStartTransaction, got %r" % (name, tok))
        return tok
    if kind == "json":
        import json

        try:
            v = json.loads(tok)
        except ValueError:
            raise ValueError("%s: expected a JSON object, got %r" % (name, tok))
        if type(v) is not dict:
            raise ValueError("%s: expected a JSON object, got %r" % (name, tok))
        return v
    # word
    if tok not in extra:
        raise ValueError("%s: expected %s, got %r" % (name, " or ".join(extra), tok))
    return tok


def parse_line(lineno, line, verbs=None):
    """(lineno, verb, args) for one line, or None for a blank/comment line."""
    i = line.find("#")
    if i >= 0:
        line = line[:i]
    toks = line.split()
    if not toks:
        return None
    verb = toks[0]
    if verb == "remote" and len(toks) > 3:  # the JSON payload may hold spaces
        toks = line.split(None, 2)
        toks[2] = toks[2].strip()
    elif verb == "burst" and len(toks) > 4:
        toks = line.split(None, 3)
        toks[3] = toks[3].strip()
    if verb not in SPEC or (verbs is not None and verb not in verbs):
        known = [v for v in SPEC if verbs is None or v in verbs]
        known.sort()
        raise ScenarioError("line %d: unknown verb %r (expected one of: %s)"
                            % (lineno, verb, ", ".join(known)))
    spec = SPEC[verb]
    given = toks[1:]
    need = 0
    for a in spec:
        if not a[2]:
            need += 1
    if len(given) < need or len(given) > len(spec):
        if not spec:
            what = "no arguments"
        elif need == len(spec):
            what = "%d argument%s" % (need, "" if need == 1 else "s")
        else:
            what = "%d to %d arguments" % (need, len(spec))
        raise ScenarioError("line %d: %s: expected %s (%s), got %d"
                            % (lineno, verb, what, _usage(verb), len(given)))
    args = []
    for k in range(len(given)):
        name, kind, optional, extra = spec[k]
        try:
            args.append(_convert(verb, name, kind, extra, given[k]))
        except ValueError as e:
            raise ScenarioError("line %d: %s: %s" % (lineno, verb, e))
    return (lineno, verb, args)


def parse(text, verbs=None):
    """Every action of a scenario text: list of (lineno, verb, args)."""
    if verbs is not None:
        for v in verbs:
            if v not in SPEC:
                raise ValueError("parse: unknown verb %r in verbs" % (v,))
    out = []
    lineno = 0
    for line in text.split("\n"):
        lineno += 1
        r = parse_line(lineno, line, verbs)
        if r is not None:
            out.append(r)
    return out
