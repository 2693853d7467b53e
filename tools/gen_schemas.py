#!/usr/bin/env python3
"""Generate firmware/ocpp/schemas.py from the official OCPP 1.6 JSON schemas.

    python3 tools/gen_schemas.py [--check]

Reads every `ocpp/v16/schemas/*.json` of the `ocpp` package (the files the development back end
validates against) and writes a compact, constant-only table that firmware/ocpp/rpc.py
validates payloads with on the charger. --check only compares and exits 1 when the file is out
of date.

The table is strings only, so it costs little heap when loaded from a .mpy (nested tuple
constants cost ~43 KB on the 64-bit unix port) and nothing when frozen into flash; rpc.py
decodes one action's object with json.loads when it validates a payload of that action:

    E = ("|v1|v2|...|", ...)         every distinct enum value list, once
    A = ((action, request, response), ...)   sorted by action; request/response: JSON text

`request` and `response` are objects. An object is a list of properties; every OCPP 1.6 object
has "additionalProperties": false (errata 3.1), which the generator asserts, so any other key is
an error. A property is `[name, code]` or `[name, code, arg]`; the code is one letter, upper
case when the property is required:

    s  string             arg: maxLength (absent: unlimited)
    e  string enum        arg: index into E
    d  date-time string   (format "date-time"; "uri" strings are plain strings)
    i  integer            n  number (arg: k, the value must be a multiple of 1/k)
    b  boolean
    o  object             arg: the object (tuple of properties)
    a  array              arg: [minItems, item] where item is [code] or [code, arg]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
OUT = os.path.join(ROOT, "firmware", "ocpp", "schemas.py")
_IGNORED = {"$schema", "$id", "id", "title", "description", "comment", "javaType", "definitions"}


def schema_dir():
    import ocpp

    return os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas")


class Gen:
    def __init__(self):
        self.enums = []  # distinct value tuples, in order of first use
        self.index = {}

    def enum(self, values):
        t = tuple(values)
        if t not in self.index:
            self.index[t] = len(self.enums)
            self.enums.append(t)
        return self.index[t]

    def resolve(self, node, root):
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/definitions/"), ref
            node = root["definitions"][ref[len("#/definitions/"):]]
        return node

    def item(self, node, root):
        """(code,) or (code, arg) for one value schema (lower-case code)."""
        node = self.resolve(node, root)
        keys = set(node) - _IGNORED
        t = node.get("type")
        if t == "string":
            if "enum" in node:
                assert not keys - {"type", "enum", "additionalProperties"}, node
                return ("e", self.enum(node["enum"]))
            fmt = node.get("format")
            assert not keys - {"type", "maxLength", "format"}, node
            if fmt == "date-time":
                assert "maxLength" not in node
                return ("d",)
            assert fmt in (None, "uri"), node
            if "maxLength" in node:
                return ("s", int(node["maxLength"]))
            return ("s",)
        if t in ("integer", "boolean"):
            assert not keys - {"type"}, node
            return (t[0],)
        if t == "number":
            assert not keys - {"type", "multipleOf"}, node
            if "multipleOf" in node:
                k = round(1 / node["multipleOf"])
                assert abs(1 / k - node["multipleOf"]) < 1e-12, node
                return ("n", k)
            return ("n",)
        if t == "object":
            return ("o", self.obj(node, root))
        if t == "array":
            assert not keys - {"type", "items", "minItems", "additionalItems"}, node
            assert isinstance(node["items"], dict), node  # additionalItems is moot then
            return ("a", (int(node.get("minItems", 0)), self.item(node["items"], root)))
        raise AssertionError("unsupported schema %r" % (node,))

    def obj(self, node, root):
        node = self.resolve(node, root)
        assert node.get("type") == "object", node
        assert node.get("additionalProperties") is False, node
        assert not set(node) - _IGNORED - {"type", "properties", "required", "additionalProperties"}, node
        req = set(node.get("required", ()))
        props = node.get("properties", {})
        assert req <= set(props), node
        out = []
        for name in sorted(props):
            it = self.item(props[name], root)
            code = it[0].upper() if name in req else it[0]
            out.append((name, code) + it[1:])
        return tuple(out)


def build():
    d = schema_dir()
    g = Gen()
    actions = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".json"):
            continue
        with open(os.path.join(d, fn), encoding="utf-8-sig") as f:
            root = json.load(f)
        name = fn[:-5]
        kind = 1
        if name.endswith("Response"):
            name, kind = name[:-len("Response")], 2
        actions.setdefault(name, [name, None, None])[kind] = g.obj(root, root)
    rows = [tuple(actions[k]) for k in sorted(actions)]
    for r in rows:
        assert r[1] is not None and r[2] is not None, r[0]
    return g.enums, rows


def render(enums, rows):
    lines = [
        '"""OCPP 1.6 message schemas as a compact table. GENERATED by tools/gen_schemas.py from the',
        "official JSON schemas of the `ocpp` package: do not edit, regenerate.",
        "",
        "E: the distinct enum value lists (\"|v1|v2|\"). A: (action, request, response) sorted by",
        "action; request and response are JSON: a list of properties [name, code(, arg)]; code:",
        "s string (arg maxLength), e enum (arg index into E), d date-time, i integer, n number",
        "(arg k: multiple of 1/k), b boolean, o object (arg: its properties), a array (arg:",
        "[minItems, [code(, arg)]]);",
        'upper case = required. No other property is allowed anywhere ("additionalProperties": false).',
        '"""',
        "E = (",
    ]
    for e in enums:
        assert not any("|" in v for v in e), e
        lines.append('    "|%s|",' % "|".join(e))
    lines.append(")")
    lines.append("A = (")
    for r in rows:
        lines.append("    (%s,%s,%s)," % (_lit(r[0]), repr(_json(r[1])), repr(_json(r[2]))))
    lines.append(")")
    return "\n".join(lines) + "\n"


def _lit(v):
    """Compact Python literal: no spaces, double quotes (strings here are plain ASCII names)."""
    if isinstance(v, tuple):
        inner = ",".join(_lit(x) for x in v)
        return "(" + inner + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, str):
        assert '"' not in v and "\\" not in v and v.isascii(), v
        return '"' + v + '"'
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise AssertionError(repr(v))


def _json(obj):
    return json.dumps(obj, separators=(",", ":"))


def generate():
    return render(*build())


def main(argv):
    text = generate()
    if "--check" in argv:
        with open(OUT) as f:
            same = f.read() == text
        print("%s is %s" % (os.path.relpath(OUT, ROOT), "up to date" if same else "OUT OF DATE"))
        return 0 if same else 1
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote %s (%d bytes)" % (os.path.relpath(OUT, ROOT), len(text)))
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main(sys.argv[1:]))
