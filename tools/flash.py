#!/usr/bin/env python3
"""Write a MicroPython firmware image onto an ESP32 (the first step before deploying the charger).

    python3 tools/flash.py --port PORT IMAGE [--chip auto|esp32|esp32s2|esp32s3|esp32c3|...]
                           [--baud 460800] [--no-erase] [--force] [--verbose]

IMAGE is a merged firmware .bin from https://micropython.org/download/ (for an ESP32 DevKit:
ESP32_GENERIC-*.bin): bootloader, partition table and MicroPython in one file. PORT is a serial
device (/dev/ttyUSB0, /dev/ttyACM0, COM3, ...) or a pyserial URL (socket://HOST:PORT,
rfc2217://HOST:PORT).

1. The image is checked before the board is touched: it must be an ESP firmware image (magic
   0xE9) for the chip given with --chip (when not auto), pass esptool's checks (checksums,
   SHA-256), hold a partition table at 0x8000 and an app that is MicroPython (ESP-IDF project
   name "micropython"; --force flashes another project's firmware anyway).
2. Connect (esptool, a few attempts only: a board that does not answer fails within seconds),
   report the chip, its MAC address and flash size, and check that the image is for that chip.
3. Erase the whole flash (unless --no-erase: the filesystem, with settings and session journal,
   then survives when the new MicroPython's partition table is the same), write the image at the
   chip's bootloader offset (0x1000 on ESP32 and ESP32-S2, 0x0 on ESP32-S3/C3/C6, 0x2000 on
   ESP32-P4/C5: esptool's table), verify it (MD5), and hard-reset the board into MicroPython.

--baud is the speed of the transfer; the connection itself starts at 115200 as the ROM wants.
--verbose shows esptool's own output instead of the few lines of progress.

Exit status: 0 flashed; 1 a problem with the board or port (missing, busy, no answer, lost during
the write); 2 bad input: arguments, an image that is not a MicroPython firmware for this chip, or
a board that is another chip than the image or --chip says (nothing was written then).
"""
import argparse
import hashlib
import os
import re
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

if __name__ == "__main__":
    _venv.ensure()  # esptool and pyserial live in the project's venv

import serial  # noqa: E402
import serial.tools.list_ports  # noqa: E402
from esp_pylib.logger import EspLog, EspLogBase  # noqa: E402
from esptool import cmds  # noqa: E402
from esptool.bin_image import LoadFirmwareImage  # noqa: E402
from esptool.loader import ESPLoader  # noqa: E402
from esptool.targets import CHIP_DEFS  # noqa: E402
from esptool.util import FatalError  # noqa: E402

CHIPS = sorted(c for c in CHIP_DEFS if c != "esp8266")  # the ESP32 family; the ESP8266 has another format
CHIP_BY_IMAGE_ID = {CHIP_DEFS[c].IMAGE_CHIP_ID: c for c in CHIPS}
CHIP_BY_NAME = {CHIP_DEFS[c].CHIP_NAME: c for c in CHIPS}
# MicroPython's generic board per chip (https://micropython.org/download/BOARD/)
BOARDS = {"esp32": "ESP32_GENERIC", "esp32s2": "ESP32_GENERIC_S2", "esp32s3": "ESP32_GENERIC_S3",
          "esp32c3": "ESP32_GENERIC_C3", "esp32c6": "ESP32_GENERIC_C6"}

IMAGE_MAGIC = ESPLoader.ESP_IMAGE_MAGIC  # 0xE9
PARTITION_TABLE = 0x8000  # flash address (ESP-IDF's default, MicroPython's too)
PARTITION_MAGIC = b"\xAA\x50"
PARTITION_MD5 = b"\xEB\xEB"
APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t.magic_word, at the start of the app's first segment (app + 0x20)
APP_TYPE, FACTORY, OTA_0 = 0x00, 0x00, 0x10
ROM_BAUD = ESPLoader.ESP_ROM_BAUD  # 115200
CONNECT_ATTEMPTS = 4  # esptool's default is 7; 4 cycles once through its reset strategies in a few seconds


class BadInput(Exception):
    """The image or the arguments are wrong for this board: exit status 2."""


class BoardError(Exception):
    """The port or the board is the problem: exit status 1. `verbose_hint`: esptool's own output
    (--verbose) may tell more."""

    def __init__(self, message, verbose_hint=False):
        super().__init__(message)
        self.verbose_hint = verbose_hint


def chip_label(chip):
    return CHIP_DEFS[chip].CHIP_NAME


def download_hint(chip=None):
    board = BOARDS.get(chip)
    if board:
        return "download %s-*.bin (MicroPython for the %s) from https://micropython.org/download/%s/" % (
            board, chip_label(chip), board)
    return ("download the MicroPython firmware .bin for your chip (for an ESP32: ESP32_GENERIC-*.bin) "
            "from https://micropython.org/download/?port=esp32")


# --- the image -------------------------------------------------------------------------------

def _what_is(data):
    """What a file that is not an ESP image is, for the message."""
    head = data[:64]
    if head.startswith(b"\x7fELF"):
        return "an ELF file (a compiler's output, not a flashable image)"
    if head.startswith(b"UF2\n"):
        return "a UF2 file (for drag-and-drop USB bootloaders, not for esptool)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (unpack it and pick the .bin)"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        return "a web page, not a firmware image (the download saved an HTML page?)"
    if head.startswith(b":") and all(c in b"0123456789ABCDEFabcdef:\r\n" for c in head):
        return "an Intel HEX file"
    return "not an ESP firmware image (it does not start with the image magic byte 0xE9)"


def _load_image(chip, data, start, what, name, base):
    """Parse the ESP image at data[start:] with esptool and check its checksum and SHA-256."""
    where = "the %s at flash 0x%x" % (what, start + base)
    try:
        img = LoadFirmwareImage(chip, data[start:])
    except (FatalError, struct.error, RuntimeError, ValueError, IndexError, TypeError) as e:
        text = " ".join(str(e).split())
        if isinstance(e, struct.error) or "End of file" in text:
            raise BadInput("%s is truncated: %s is cut off (%s); %s" % (name, where, text, download_hint(chip)))
        raise BadInput("%s is corrupt: esptool cannot read %s (%s); %s" % (name, where, text, download_hint(chip)))
    if img.chip_id != CHIP_DEFS[chip].IMAGE_CHIP_ID:
        raise BadInput("%s mixes chips: %s is for chip id %d, the bootloader for the %s; %s"
                       % (name, where, img.chip_id, chip_label(chip), download_hint(chip)))
    if img.checksum != img.calculate_checksum():
        raise BadInput("%s is corrupt: the checksum of %s does not match; %s"
                       % (name, where, download_hint(chip)))
    if img.append_digest:
        if len(img.stored_digest) < 32:
            raise BadInput("%s is truncated: the SHA-256 of %s is cut off; %s" % (name, where, download_hint(chip)))
        if img.stored_digest != img.calc_digest:
            raise BadInput("%s is corrupt: the SHA-256 of %s does not match; %s"
                           % (name, where, download_hint(chip)))
    return img


def _cstr(b):
    return b.split(b"\0")[0].decode("ascii", "replace")


def _partitions(data, start, name, chip):
    """The entries of the ESP-IDF partition table at data[start:] as (type, subtype, offset, size, label)."""
    out = []
    table = data[start:start + 0xC00]
    for pos in range(0, len(table) - 31, 32):
        entry = table[pos:pos + 32]
        if entry[:2] == PARTITION_MAGIC:
            _m, ptype, subtype, offset, size, label, _flags = struct.unpack("<2sBBII16sI", entry)
            out.append((ptype, subtype, offset, size, label.rstrip(b"\0").decode("ascii", "replace")))
        elif entry[:2] == PARTITION_MD5:
            if entry[16:] != hashlib.md5(table[:pos]).digest():
                raise BadInput("%s is corrupt: the MD5 of its partition table does not match; %s"
                               % (name, download_hint(chip)))
            break
        else:
            break
    return out


def check_image(path, chip="auto", force=False):
    """Check that `path` is a merged MicroPython firmware (for `chip` unless "auto").

    Returns a dict: data, chip, offset (flash address to write it at), project, version, idf,
    app (flash address of the app), flash_end (end of the last partition). Raises BadInput with a
    one-line message saying what is wrong and what to download instead."""
    name = os.path.basename(path)
    hint_chip = None if chip == "auto" else chip
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadInput("%s: no such file; %s" % (path, download_hint(hint_chip)))
    except IsADirectoryError:
        raise BadInput("%s is a directory; give the firmware .bin file" % path)
    except OSError as e:
        raise BadInput("%s: cannot read it (%s)" % (path, e.strerror or e))
    if not data:
        raise BadInput("%s is empty; %s" % (name, download_hint(hint_chip)))
    if data[0] != IMAGE_MAGIC:
        raise BadInput("%s is %s; %s" % (name, _what_is(data), download_hint(hint_chip)))
    if len(data) < 24:
        raise BadInput("%s is truncated (%d bytes, not even an image header); %s" % (name, len(data), download_hint(hint_chip)))
    image_chip = CHIP_BY_IMAGE_ID.get(data[12])  # esp_image_header_t.chip_id
    if image_chip is None:
        raise BadInput("%s is an ESP image for a chip esptool does not know (chip id %d); %s"
                       % (name, data[12], download_hint(hint_chip)))
    if chip != "auto" and image_chip != chip:
        raise BadInput("%s is an %s image, not for an %s (--chip %s); %s"
                       % (name, chip_label(image_chip), chip_label(chip), chip, download_hint(chip)))
    base = CHIP_DEFS[image_chip].BOOTLOADER_FLASH_OFFSET
    if len(data) >= 0x24 and struct.unpack_from("<I", data, 0x20)[0] == APP_DESC_MAGIC:
        project = _cstr(data[0x50:0x70])
        raise BadInput("%s is an application image only (ESP-IDF project '%s', written at 0x10000), not the merged "
                       "firmware with bootloader and partition table; %s" % (name, project, download_hint(image_chip)))
    _load_image(image_chip, data, 0, "bootloader", name, base)
    table = PARTITION_TABLE - base
    if len(data) < table + 32:
        raise BadInput("%s is truncated or only a bootloader: it ends (%d bytes) before the partition table at "
                       "0x%x; %s" % (name, len(data), PARTITION_TABLE, download_hint(image_chip)))
    if data[table:table + 2] != PARTITION_MAGIC:
        raise BadInput("%s has no partition table at 0x%x (file offset 0x%x): not a merged firmware image; %s"
                       % (name, PARTITION_TABLE, table, download_hint(image_chip)))
    parts = _partitions(data, table, name, image_chip)
    apps = [p for p in parts if p[0] == APP_TYPE]
    app_part = (next((p for p in apps if p[1] == FACTORY), None) or next((p for p in apps if p[1] == OTA_0), None)
                or (apps[0] if apps else None))
    if app_part is None:
        raise BadInput("%s has no app partition in its partition table; %s" % (name, download_hint(image_chip)))
    app = app_part[2] - base
    if len(data) < app + 24:
        raise BadInput("%s is truncated: it ends (%d bytes) before the app at 0x%x; %s"
                       % (name, len(data), app_part[2], download_hint(image_chip)))
    img = _load_image(image_chip, data, app, "app", name, base)
    if img.data_length + (32 if img.append_digest else 0) > app_part[3]:
        raise BadInput("%s is corrupt: the app at 0x%x is larger than its partition (%d bytes)"
                       % (name, app_part[2], app_part[3]))
    desc = data[app + 0x20:app + 0x20 + 256]
    if len(desc) < 256 or struct.unpack_from("<I", desc)[0] != APP_DESC_MAGIC:
        raise BadInput("%s is not an ESP-IDF firmware: the app at 0x%x has no application description; %s"
                       % (name, app_part[2], download_hint(image_chip)))
    version, project, idf = _cstr(desc[0x10:0x30]), _cstr(desc[0x30:0x50]), _cstr(desc[0x70:0x90])
    if project != "micropython" and not force:
        raise BadInput("%s is not MicroPython: it is the ESP-IDF project '%s' (version %s); %s, "
                       "or pass --force to flash it anyway" % (name, project, version, download_hint(image_chip)))
    return {"data": data, "chip": image_chip, "offset": base, "project": project, "version": version, "idf": idf,
            "app": app_part[2], "flash_end": max(p[2] + p[3] for p in parts)}


# --- the board -------------------------------------------------------------------------------

def _is_url(port):
    return "://" in port


def _ports_found():
    ports = sorted(serial.tools.list_ports.comports(), key=lambda p: p.device)
    if not ports:
        return ("no serial ports found: is the board plugged in, with a USB cable that carries data (not a "
                "charge-only one)? Its USB-serial chip may need a driver (CP210x or CH340).")
    return "serial ports found: " + ", ".join(
        p.device + ("" if p.description in (None, "", "n/a", p.device) else " (%s)" % p.description) for p in ports)


def _dialout_hint():
    if sys.platform.startswith("linux"):
        return ("On Linux your user must be in the dialout group to use them: "
                "sudo usermod -aG dialout $USER, then log out and in again.")
    return ""


def missing_port(port):
    return "\n  ".join(x for x in ("%s: no such serial port." % port, _ports_found(), _dialout_hint()) if x)


def explain_connect_error(port, err):
    """A BoardError with hints for a failure to open the port or to talk to the ROM bootloader."""
    text = " ".join(str(err).split())
    low = text.lower()
    if _is_url(port) and re.search(r"refused|errno 111\b|getaddrinfo|name or service|timed out", low):
        m = re.search(r"\[Errno -?\d+\] [^)]*", text)
        return BoardError("%s: nothing answers at that address (%s)." % (port, m.group(0) if m else text))
    if re.search(r"exclusively lock|errno 16\b|resource busy|errno 11\b|temporarily unavailable|access is denied", low):
        return BoardError("%s is in use by another program: close mpremote, screen/minicom/picocom, Thonny or the "
                          "Arduino serial monitor (whatever has the port open), then try again." % port)
    if re.search(r"permission denied|errno 13\b", low):
        return BoardError("\n  ".join(x for x in ("%s: permission denied." % port, _dialout_hint()
                                                  or "Check that your user may open serial ports.") if x))
    if re.search(r"errno 2\b|no such file|filenotfounderror|cannot find the file", low):
        return BoardError(missing_port(port))
    return BoardError("\n  ".join([
        "no answer from the ESP bootloader on %s after %d attempts (%s)." % (port, CONNECT_ATTEMPTS, text),
        "Put the board into download mode: hold BOOT (IO0), tap EN/RESET, release BOOT, and run this again.",
        "Use a USB cable with data lines (a charge-only cable powers the board but carries nothing).",
        "Try a slower, steadier link with --baud 115200.",
        "Install the driver for the board's USB-serial chip (CP210x or CH340) if the port does not show up "
        "or comes and goes.",
    ]), verbose_hint=True)


class Output:
    """Our few lines on stdout (a line may be finished later), errors on stderr."""

    def __init__(self, verbose=False):
        self.open_line = False
        self.verbose = verbose  # esptool prints too: no line is left open for later

    def say(self, text, end="\n"):
        if self.verbose:
            end = "\n"
        sys.stdout.write(text + end)
        sys.stdout.flush()
        self.open_line = end != "\n"

    def error(self, message, hint=""):
        if self.open_line:
            self.say("")
        print("flash.py: error: %s" % message, file=sys.stderr)
        if hint:
            print("  " + hint, file=sys.stderr)


class Progress(EspLogBase):
    """Takes esptool's output: its messages are dropped (--verbose shows them), and the write's
    progress becomes " 25% 50% 75% 100%" on the current line."""

    def __init__(self, out):
        self.out = out
        self.total = self.shown = None

    def _drop(self, *args, **kwargs):
        pass

    print = err = warn = note = hint = debug = set_verbosity = _drop  # noqa: A003

    def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
        quarter = 100 if total_iters <= 0 else 25 * (100 * cur_iter // total_iters // 25)
        if total_iters != self.total:
            self.total, self.shown = total_iters, 0  # a new bar
        if quarter > self.shown:
            self.shown = quarter
            self.out.say(" %d%%" % quarter, end="")


def _size_bytes(text):
    """'4MB' -> 4194304 (esptool's flash size names), None for None."""
    if not text:
        return None
    n = int("".join(c for c in text if c.isdigit()) or 0)
    return n * 1024 * 1024 if text.upper().endswith("MB") else n * 1024 if text.upper().endswith("KB") else None


def flash_board(port, info, chip="auto", baud=460800, erase=True, say=print):
    """Connect to the board on `port` and write the checked image `info` (from check_image)."""
    if not _is_url(port) and sys.platform != "win32" and not os.path.exists(port):
        raise BoardError(missing_port(port))
    say("connecting to %s ..." % port)
    try:
        esp = cmds.detect_chip(port, ROM_BAUD, "default-reset", False, CONNECT_ATTEMPTS)
    except (FatalError, serial.SerialException, OSError) as e:
        raise explain_connect_error(port, e)
    step = "talking to the board"
    try:
        connected = CHIP_BY_NAME.get(esp.CHIP_NAME)
        description = esp.get_chip_description()
        mac = ":".join("%02x" % b for b in esp.read_mac("BASE_MAC"))
        say("board: %s, MAC %s" % (description, mac))
        if chip != "auto" and connected != chip:
            raise BadInput("the board is an %s, not an %s (--chip %s); nothing was written"
                           % (esp.CHIP_NAME, chip_label(chip), chip))
        if connected != info["chip"]:
            raise BadInput("the image is for the %s but the board is an %s; nothing was written; %s"
                           % (chip_label(info["chip"]), esp.CHIP_NAME, download_hint(connected)))
        step = "starting esptool's flasher stub"
        esp = cmds.run_stub(esp)
        if baud != ROM_BAUD:
            step = "changing the baud rate to %d" % baud
            esp.change_baud(baud)
        step = "attaching the flash"
        cmds.attach_flash(esp)
        try:
            size = cmds.detect_flash_size(esp)
        except FatalError:
            size = None
        say("flash: %s" % (size or "size unknown"))
        if _size_bytes(size) and info["flash_end"] > _size_bytes(size):
            raise BadInput("the image's partition table needs %d MB of flash, the board has %s; nothing was written; "
                           "download a build for %s of flash" % (info["flash_end"] >> 20, size, size))
        if erase:
            step = "erasing the flash"
            say("erasing the flash ...", end="")
            t = time.monotonic()
            cmds.erase_flash(esp)
            say(" done in %.1f s" % (time.monotonic() - t))
        step = "writing the image"
        t = time.monotonic()
        say("writing %d bytes at 0x%x:" % (len(info["data"]), info["offset"]), end="")
        cmds.write_flash(esp, [(info["offset"], info["data"])])
        say(", verified (MD5) in %.1f s" % (time.monotonic() - t))
        step = "resetting the board"
        cmds.reset_chip(esp, "hard-reset")
        say("reset: the board starts %s; next: mpremote connect %s" % (
            "MicroPython " + info["version"] if info["project"] == "micropython" else "'%s'" % info["project"], port))
    except (FatalError, serial.SerialException, OSError) as e:
        raise BoardError("failed while %s on %s: %s" % (step, port, " ".join(str(e).split())), verbose_hint=True)
    finally:
        try:
            esp._port.close()
        except Exception:  # noqa: BLE001 - the port may be gone with the board
            pass


def baud_rate(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a baud rate like 115200 or 460800, got %r" % text)
    if not 9600 <= n <= 5000000:
        raise argparse.ArgumentTypeError("baud rate %d out of range (9600 to 5000000)" % n)
    return n


def main(argv=None):
    p = argparse.ArgumentParser(prog="flash.py", description="Erase an ESP32 and write a MicroPython firmware image.")
    p.add_argument("image", metavar="IMAGE", help="merged MicroPython firmware .bin (micropython.org/download)")
    p.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0, COM3) or URL (socket://HOST:PORT)")
    p.add_argument("--chip", choices=["auto"] + CHIPS, default="auto", metavar="CHIP",
                   help="the chip the board must have: auto (default: the one the image is for) or one of "
                   + ", ".join(CHIPS))
    p.add_argument("--baud", type=baud_rate, default=460800, help="transfer speed (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="do not erase the whole flash first")
    p.add_argument("--force", action="store_true", help="flash an ESP-IDF firmware that is not MicroPython")
    p.add_argument("--verbose", action="store_true", help="show esptool's own output")
    a = p.parse_args(argv)

    out = Output(a.verbose)
    previous = EspLog.instance
    if not a.verbose:
        EspLog.set_logger(Progress(out))
    try:
        info = check_image(a.image, a.chip, a.force)
        app = "MicroPython %s" % info["version"] if info["project"] == "micropython" else \
            "'%s' %s (not MicroPython: --force)" % (info["project"], info["version"])
        out.say("image: %s: %s for the %s (ESP-IDF %s), %d bytes, to write at 0x%x"
                % (os.path.basename(a.image), app, chip_label(info["chip"]), info["idf"], len(info["data"]),
                   info["offset"]))
        flash_board(a.port, info, a.chip, a.baud, not a.no_erase, out.say)
        return 0
    except BadInput as e:
        out.error(e)
        return 2
    except BoardError as e:
        out.error(e, "(--verbose shows esptool's own output)" if e.verbose_hint and not a.verbose else "")
        return 1
    except KeyboardInterrupt:
        out.error("interrupted (if it was writing, the board now holds a partial image: run this again)")
        return 1
    finally:
        EspLog.instance = previous


if __name__ == "__main__":
    sys.exit(main())
