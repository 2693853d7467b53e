"""Host fake of MicroPython's `esp32` module: NVS and the trivial constants.

World hook (firmware never calls it):

    hw_set_flash_dir(path)
        Swap the simulated flash: forget the NVS contents held in memory and use directory `path`
        (created if missing), where each namespace's committed values live in
        nvs-<namespace>.json, so a simulated power cut that restarts the process keeps them.
        None = a blank flash held in memory only (what a test starts from).

NVS semantics: set_*/erase_key are seen at once by every NVS object of the namespace, but only
commit() writes them to flash; machine.hw_reset() (any reset or power cut) drops what was not
committed. Flash survives machine.hw_reset(keep_world=False) too: it belongs to the board.
Errors are OSError(code, name) with the ESP-IDF code, as the board raises them, e.g.
OSError(-4354, 'ESP_ERR_NVS_NOT_FOUND') for a missing key.
"""
import binascii
import json
import os

import machine

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_EXEC = 1
HEAP_DATA = 4

_NOT_FOUND = (-4354, "ESP_ERR_NVS_NOT_FOUND")
_TYPE_MISMATCH = (-4355, "ESP_ERR_NVS_TYPE_MISMATCH")
_KEY_TOO_LONG = (-4361, "ESP_ERR_NVS_KEY_TOO_LONG")
_INVALID_LENGTH = (-4364, "ESP_ERR_NVS_INVALID_LENGTH")

_flash_dir = None
_flash = {}    # namespace -> {key: (kind, value)} as committed to flash
_working = {}  # namespace -> {key: (kind, value)} including uncommitted changes


def hw_set_flash_dir(path):
    global _flash_dir
    _flash_dir = path
    _flash.clear()
    _working.clear()
    if path is not None:
        try:
            os.mkdir(path)
        except OSError:
            pass  # already there


def _on_reset(keep_world):
    _working.clear()


machine._reset_hooks.append(_on_reset)


def _file(namespace):
    return _flash_dir + "/nvs-" + namespace + ".json"


def _committed(namespace):
    if namespace not in _flash:
        entries = {}
        if _flash_dir is not None:
            try:
                with open(_file(namespace)) as f:
                    doc = json.load(f)
            except OSError:
                doc = {}
            for key in doc:
                kind, value = doc[key]
                entries[key] = (kind, binascii.unhexlify(value) if kind == "blob" else value)
        _flash[namespace] = entries
    return _flash[namespace]


def _write_flash(namespace, entries):
    _flash[namespace] = dict(entries)
    if _flash_dir is None:
        return
    doc = {}
    for key in entries:
        kind, value = entries[key]
        doc[key] = [kind, binascii.hexlify(value).decode() if kind == "blob" else value]
    tmp = _file(namespace) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, _file(namespace))  # atomic, like LittleFS


class NVS:
    def __init__(self, namespace):
        self._ns = namespace

    def _entries(self):
        entries = _working.get(self._ns)
        if entries is None:
            entries = _working[self._ns] = dict(_committed(self._ns))
        return entries

    def _set(self, key, kind, value):
        if len(key) > 15:
            raise OSError(*_KEY_TOO_LONG)
        self._entries()[key] = (kind, value)

    def _get(self, key, kind):
        entry = self._entries().get(key)
        if entry is None:
            raise OSError(*_NOT_FOUND)
        if entry[0] != kind:
            raise OSError(*_TYPE_MISMATCH)
        return entry[1]

    def set_i32(self, key, value):
        if not -2147483648 <= value <= 2147483647:
            raise OverflowError("overflow converting long int to machine word")
        self._set(key, "i32", int(value))

    def get_i32(self, key):
        return self._get(key, "i32")

    def set_blob(self, key, value):
        self._set(key, "blob", bytes(value))

    def get_blob(self, key, buffer):
        value = self._get(key, "blob")
        if len(buffer) < len(value):
            raise OSError(*_INVALID_LENGTH)
        buffer[0:len(value)] = value
        return len(value)

    def erase_key(self, key):
        entries = self._entries()
        if key not in entries:
            raise OSError(*_NOT_FOUND)
        del entries[key]

    def commit(self):
        _write_flash(self._ns, self._entries())
