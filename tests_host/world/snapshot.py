"""The world's state as JSON, so that a power cut can restart the interpreter (tests_host/simrun.py).

    save(obj, f)             # obj's attributes, and those of the objects it holds, as JSON into file f
    load(obj, doc, classes)  # doc = json.load of it, into a freshly built obj of the same shape

A board's RAM is gone at a power cut; the virtual ESP32 starts a fresh interpreter then, so that
nothing of the old boot stays in its heap. The world (the car, the meter, the relay ...) lives on:
it is saved here before the old interpreter exits and loaded into a world built anew from the same
board profile in the next one.

Saved: None, bools, ints, strings, floats (exactly, as IEEE doubles), bytes and bytearrays, lists,
tuples, dicts, and objects with a __dict__ (by class name, attribute by attribute; an object held
twice is saved once). Not saved: callables (bound methods, functions, classes): the fresh world's
own are kept, since its constructor wired them the same way.
"""
import binascii
import json
import struct

KEEP = {"k": 0}  # a value that is not saved: the fresh object's own stays


def save(obj, f):
    """Write obj's state to the text file f as JSON, piece by piece: it runs in the heap the old
    boot leaves, so it allocates little at a time."""
    _save(obj, f, {})


def _hex(data):
    return '"%s"' % binascii.hexlify(data).decode()


def _save(v, f, seen):
    w = f.write
    if v is None or isinstance(v, (bool, int, str)):
        w(json.dumps(v))
    elif isinstance(v, float):
        w('{"f": %s}' % _hex(struct.pack("<d", v)))
    elif isinstance(v, bytearray):
        w('{"ba": %s}' % _hex(v))
    elif isinstance(v, bytes):
        w('{"b": %s}' % _hex(v))
    elif isinstance(v, (list, tuple)):
        w('{"l": [' if isinstance(v, list) else '{"t": [')
        for i, x in enumerate(v):
            if i:
                w(", ")
            _save(x, f, seen)
        w("]}")
    elif isinstance(v, dict):
        w('{"d": [')
        first = True
        for k, x in v.items():
            w("[" if first else ", [")
            first = False
            _save(k, f, seen)
            w(", ")
            _save(x, f, seen)
            w("]")
        w("]}")
    elif callable(v) or not hasattr(v, "__dict__"):
        w(json.dumps(KEEP))
    elif id(v) in seen:
        w('{"ref": %d}' % seen[id(v)])
    else:
        n = seen[id(v)] = len(seen)
        w('{"o": %s, "id": %d, "a": {' % (json.dumps(type(v).__name__), n))
        first = True
        for name, x in v.__dict__.items():
            w('%s"%s": ' % ("" if first else ", ", name))
            first = False
            _save(x, f, seen)
        w("}}")


def load(obj, doc, classes):
    """Restore `doc` (from save) into `obj`; `classes` maps class names to classes for objects
    the fresh world does not have yet."""
    _into(obj, doc, classes, {})


def _into(obj, doc, classes, made):
    made[doc["id"]] = obj
    for name, sv in doc["a"].items():
        if sv == KEEP:
            continue
        live = getattr(obj, name, None)
        setattr(obj, name, _value(sv, live, classes, made))


def fresh(v):
    """A JSON value of the loaded document as new objects (a str or a big int taken as it is would
    keep a piece of the document alive in the middle of the heap it leaves when it is freed)."""
    if isinstance(v, str):
        return "%s" % v if v else v
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if -(1 << 30) <= v < (1 << 30) else v + 0
    if isinstance(v, list):
        return [fresh(x) for x in v]
    if isinstance(v, dict):
        return {fresh(k): fresh(x) for k, x in v.items()}
    return v


def _value(sv, live, classes, made):
    if not isinstance(sv, dict):
        return fresh(sv)
    if "f" in sv:
        return struct.unpack("<d", binascii.unhexlify(sv["f"]))[0]
    if "ba" in sv:
        return bytearray(binascii.unhexlify(sv["ba"]))
    if "b" in sv:
        return bytes(binascii.unhexlify(sv["b"]))
    if "ref" in sv:
        return made[sv["ref"]]
    if "l" in sv or "t" in sv:
        items = sv.get("l", sv.get("t"))
        olds = live if isinstance(live, (list, tuple)) and len(live) == len(items) else [None] * len(items)
        out = [_value(x, olds[i], classes, made) for i, x in enumerate(items)]
        return out if "l" in sv else tuple(out)
    if "d" in sv:
        out = {}
        for k, x in sv["d"]:
            key = _value(k, None, classes, made)
            out[key] = _value(x, live.get(key) if isinstance(live, dict) else None, classes, made)
        return out
    if "o" in sv:
        if live is None or not hasattr(live, "__dict__") or type(live).__name__ != sv["o"]:
            live = object.__new__(classes[sv["o"]])
        _into(live, sv, classes, made)
        return live
    return live  # KEEP inside a container: the fresh one's, if any
