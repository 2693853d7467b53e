"""Synthetic ESP32 firmware images for tests_host/test_flash.py, built with esptool's own image
classes: the layout of a MicroPython merged download (ESP32_GENERIC-*.bin) in a few kilobytes.

    merged(chip="esp32", project="micropython")  # bootloader + partition table + app, as one file

File layout (flash address minus the chip's bootloader offset, 0x1000 on ESP32/ESP32-S2, 0x0 on
ESP32-S3/C3): the bootloader image at 0, the partition table at 0x8000 and the app image at 0x10000
(the factory partition). The app's first segment starts with an esp_app_desc_t naming `project`.
"""
import hashlib
import struct

from esptool.bin_image import ELFSection, ESP32FirmwareImage
from esptool.targets import CHIP_DEFS

PARTITION_TABLE = 0x8000
APP = 0x10000
APP_DESC_MAGIC = 0xABCD5432
APP_DESC_FMT = "<II8s32s32s16s16s32s32sHHB3s72s"  # esp_app_desc_t, 256 bytes
FLASH_4MB_DIO_40M = (2, 0x20)  # (flash_mode, flash_size_freq) as in MicroPython's 4 MB builds


def offset(chip):
    return CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET


def image_class(chip):
    """esptool's image class for `chip` (ESP32FirmwareImage or the subclass whose ROM is chip's)."""
    todo = [ESP32FirmwareImage]
    while todo:
        cls = todo.pop()
        if cls.ROM_LOADER is CHIP_DEFS[chip]:
            return cls
        todo += cls.__subclasses__()
    raise KeyError(chip)


def _region(chip, name):
    return next(start for start, _end, n in CHIP_DEFS[chip].MEMORY_MAP if n == name)


def _new_image(chip):
    img = image_class(chip)()
    img.flash_mode, img.flash_size_freq = FLASH_4MB_DIO_40M
    return img


def bootloader(chip="esp32"):
    img = _new_image(chip)
    desc = struct.pack("<B3sI32s24s16s", 0x50, b"", 1, b"v5.5.1", b"Jan  1 2026 12:00:00", b"")  # esp_bootloader_desc_t
    img.segments = [ELFSection(b".dram0.bootdesc", _region(chip, "DRAM"), desc + bytes(range(256)) * 4, 0),
                    ELFSection(b".iram_loader.text", _region(chip, "IRAM"), b"\x36\x41\x00" * 500 + b"\x00", 0)]
    img.entrypoint = _region(chip, "IRAM") + 0x400
    return img.save(None)


def app_desc(project="micropython", version="v1.29.0"):
    return struct.pack(APP_DESC_FMT, APP_DESC_MAGIC, 0, b"", version.encode(), project.encode(), b"12:00:00",
                       b"Jan  1 2026", b"v5.5.1", hashlib.sha256(project.encode()).digest(), 0, 0, 0, b"", b"")


def app(chip="esp32", project="micropython", version="v1.29.0", size=24 * 1024):
    img = _new_image(chip)
    drom = _region(chip, "DROM")
    body = bytes((i * 7) & 0xFF for i in range(size))  # compresses less than zeros would
    img.segments = [ELFSection(b".flash.appdesc", drom + 0x20, app_desc(project, version) + body, 0),  # at app + 0x20
                    ELFSection(b".iram0.text", _region(chip, "IRAM"), b"\x36\x41\x00" * 300 + b"\x00", 0)]
    img.entrypoint = _region(chip, "IRAM")
    return img.save(None)


def partition_table(app_size=0x1F0000, flash_mb=4):
    entries = [  # (type, subtype, offset, size, label): MicroPython's partitions-4MiB.csv
        (0x01, 0x02, 0x9000, 0x6000, b"nvs"),
        (0x01, 0x01, 0xF000, 0x1000, b"phy_init"),
        (0x00, 0x00, APP, app_size, b"factory"),
        (0x01, 0x81, APP + app_size, (flash_mb << 20) - APP - app_size, b"vfs"),
    ]
    table = b"".join(struct.pack("<2sBBII16sI", b"\xAA\x50", t, s, o, n, label, 0) for t, s, o, n, label in entries)
    table += b"\xEB\xEB" + b"\xFF" * 14 + hashlib.md5(table).digest()
    return table + b"\xFF" * (0xC00 - len(table))


def merged(chip="esp32", project="micropython", version="v1.29.0", flash_mb=4):
    """The whole download: what to write at the chip's bootloader offset."""
    base = offset(chip)
    out = bytearray(b"\xFF" * (APP - base))
    boot = bootloader(chip)
    out[0:len(boot)] = boot
    table = partition_table(flash_mb=flash_mb)
    out[PARTITION_TABLE - base:PARTITION_TABLE - base + len(table)] = table
    return bytes(out) + app(chip, project, version)
