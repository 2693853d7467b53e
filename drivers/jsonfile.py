"""The one reader of JSON files (and JSON text) from outside: capped, strict, an object.

    read_json(path, cap, fs=None) -> dict    the JSON object in the file at `path`; its size is
                                             looked up before a byte is read
    loads(data) -> dict                      the JSON object in `data` (bytes or str)

Both raise ValueError with a short reason, never an empty message: "204819 bytes, more than the
8192 allowed", "not UTF-8 text", "nested too deeply (more than 32 levels)", "not valid JSON
(expected : at 12)", "expected a JSON object, got null", "... do not fit in the free memory".
The caller names the file and keeps its own fallback for a refused one; every file the firmware
reads is a JSON object. The scan is drivers/untrusted.py's. drivers/ may not import firmware/,
so the reader lives here and firmware/store.py wraps it.
"""
import json

from drivers import untrusted


def json_type(v):
    """What a JSON value is, for messages ("null", "an array", ...)."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "a boolean"
    t = type(v)
    if t is dict:
        return "an object"
    if t is list:
        return "an array"
    if t is str:
        return "a string"
    return "a number"


def loads(data):
    """The JSON object in `data` (bytes or str): strict JSON in UTF-8, at most
    untrusted.MAX_DEPTH levels, an object at the top. Raises ValueError with a short reason."""
    why = untrusted.json_error(data)
    if why is not None:
        if why == untrusted.NOT_UTF8:
            raise ValueError("not UTF-8 text")
        if why == untrusted.TOO_DEEP:
            raise ValueError("%s (more than %d levels)" % (untrusted.TOO_DEEP, untrusted.MAX_DEPTH))
        raise ValueError("not valid JSON (%s)" % why)
    try:
        doc = json.loads(data)
    except MemoryError:
        raise ValueError("%d bytes of JSON do not fit in the free memory" % len(data))
    except ValueError as e:  # CPython: an integer of more than 4300 digits
        raise ValueError("not valid JSON (%s)" % (str(e) or type(e).__name__))
    if type(doc) is not dict:
        raise ValueError("expected a JSON object, got %s" % json_type(doc))
    return doc


def read_json(path, cap, fs=None):
    """The JSON object in the file at `path` (see loads). The file's size is looked up first (a
    seek to its end): one of more than `cap` bytes is refused before a byte of it is read, as
    reading 200 KB alone is a MemoryError in a 64 KB heap. `fs`: an object with open(path, mode)
    (firmware/store.py's), else the built-in open. Raises OSError when the file cannot be opened
    (a missing one too), ValueError with the reason when it is refused."""
    f = fs.open(path, "rb") if fs is not None else open(path, "rb")
    try:
        size = f.seek(0, 2)
        if size > cap:
            raise ValueError("%d bytes, more than the %d allowed" % (size, cap))
        f.seek(0)
        try:
            data = f.read()
        except MemoryError:
            raise ValueError("%d bytes do not fit in the free memory" % size)
    finally:
        f.close()
    return loads(data)
