"""The charger firmware. `dumps`: compact JSON, what goes on the wire and onto the flash; `loads`:
JSON from bytes or a view (one home for the OCPP link and the storage, which import nothing
else of each other). `Many`: a list written an element at a time (`steps`), by the storage into
a file and by the encoder (firmware/encoder.py) into a WebSocket frame, so that no document needs
one block of heap its size. `drive` / `finish`: a long piece of work written as a generator that
yields between its steps, run at once or with the other tasks running at each yield."""
import json

try:
    json.dumps([], separators=(",", ":"))

    def dumps(o):
        return json.dumps(o, separators=(",", ":"))
except TypeError:  # pragma: no cover - an old MicroPython without separators
    dumps = json.dumps


def loads(buf):
    """json.loads of bytes or a memoryview: MicroPython reads the view in place, CPython's json
    takes no memoryview."""
    try:
        return json.loads(buf)
    except TypeError:
        return json.loads(bytes(buf))


class Many(list):
    """A list whose JSON is made an element at a time (steps()): each must fit the buffer it goes
    through (the encoder's), the list need not."""


def drive(gen):
    """Run generator `gen` to its end at once; its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


async def finish(gen):
    """Run generator `gen` to its end, letting the other asyncio tasks run at each of its yields;
    its return value."""
    import asyncio

    while True:
        try:
            next(gen)
        except StopIteration as e:
            return e.value
        await asyncio.sleep(0)


def holds_many(v, depth=3):
    """True when `v` is, or within `depth` levels holds, a Many: a frame's payload's object's list
    at the deepest (GetCompositeSchedule's periods), so a MeterValues is not walked whole."""
    t = type(v)
    if t is Many:
        return True
    if depth == 0:
        return False
    if t is dict:
        v = v.values()
    elif t is not list:
        return False
    for x in v:
        if holds_many(x, depth - 1):
            return True
    return False


NOTHING = object()  # steps(): nothing to encode after the text


def steps(v):
    """The JSON of `v` that holds a Many, as (text, value) steps: write `text` (punctuation),
    then encode `value` whole unless it is NOTHING. Lists and dicts that hold a Many go an
    element at a time, so the longest step is one element; a Many's own elements are encoded
    whole (none is looked into: 8 charging profiles hold 600 numbers)."""
    if type(v) is dict:
        elements, opening, closing = v.items(), "{", "}"
    else:
        elements, opening, closing = v, "[", "]"
    whole = type(v) is Many
    sep = opening
    for x in elements:
        if closing == "}":
            yield sep, x[0]
            sep = ":"
            x = x[1]
        if not whole and holds_many(x):
            yield sep, NOTHING
            yield from steps(x)
        else:
            yield sep, x
        sep = ","
    yield (closing if sep == "," else opening + closing), NOTHING
