"""tools/flash.py against esp32-mock-bootloader (a ROM bootloader on a TCP port that keeps an
in-memory flash) with synthetic MicroPython-like images (tests_host/esp_image.py): what it writes
where, what it refuses before touching the board, and how it fails when the port or the board is
the problem."""
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import esp_image  # noqa: E402
import flash  # noqa: E402
from esp32_mock_bootloader import mock_bootloader  # noqa: E402
from esptool import cmds  # noqa: E402

FLASH_PY = os.path.join(TOOLS, "flash.py")
NOBODY = "socket://127.0.0.1:1"  # the board must not be needed: connecting here would fail with exit 1


@pytest.fixture
def esp32():
    with mock_bootloader(chip="esp32") as m:
        yield m.url()


@pytest.fixture
def esp32s3():
    with mock_bootloader(chip="esp32s3") as m:
        yield m.url()


def write_file(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def run(argv, capsys):
    rc = flash.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


class Board:
    """Direct access to the mock's flash with esptool, to prepare it and check it afterwards."""

    def __init__(self, url):
        self.url = url

    def _connect(self, stub=True):
        esp = cmds.detect_chip(self.url, 115200, connect_attempts=2)
        if stub:
            esp = cmds.run_stub(esp)
        cmds.attach_flash(esp)
        return esp

    def holds(self, addr, data):
        """Whether the flash at addr holds `data`: the MD5 the board computes over the whole range,
        and the bytes themselves at its start, middle and end. Through the ROM loader, whose reads
        go 64 bytes a command: the mock's streamed reads (the stub's) give up when an ack is
        more than 50 ms late."""
        esp = self._connect(stub=False)
        try:
            if esp.flash_md5sum(addr, len(data)) != hashlib.md5(data).hexdigest():
                return False
            for at in sorted({0, len(data) // 2 // 256 * 256, max(0, len(data) - 256)}):
                if esp.read_flash(addr + at, min(256, len(data) - at)) != data[at:at + 256]:
                    return False
            return True
        finally:
            esp._port.close()

    def erased(self, addr, size):
        return self.holds(addr, b"\xff" * size)

    def write(self, addr, data):
        esp = self._connect()
        try:
            cmds.write_flash(esp, [(addr, data)])
        finally:
            esp._port.close()


JUNK = 0x300000  # inside the filesystem partition: an erase must clear it
JUNK_DATA = b"old filesystem " * 256


# --- the image checks ------------------------------------------------------------------------

@pytest.mark.parametrize("chip, offset", [("esp32", 0x1000), ("esp32s2", 0x1000), ("esp32s3", 0x0), ("esp32c3", 0x0)])
def test_check_image_accepts_micropython(tmp_path, chip, offset):
    path = write_file(tmp_path, "fw.bin", esp_image.merged(chip))
    info = flash.check_image(path)
    assert (info["chip"], info["offset"], info["app"], info["project"]) == (chip, offset, 0x10000, "micropython")
    assert flash.check_image(path, chip)["chip"] == chip


def _truncated():
    d = esp_image.merged("esp32")
    return d[:len(d) - 4000]


def _corrupt():
    d = bytearray(esp_image.merged("esp32"))
    d[0xF000 + 0x2000] ^= 0x01  # inside the app's first segment
    return bytes(d)


WRONG = [  # (file name, content, extra arguments, words the message must have)
    ("random.bin", bytes(range(7, 256)) * 40, [], ["not an ESP firmware image", "ESP32_GENERIC"]),
    ("firmware.elf", b"\x7fELF\x01\x01\x01\x00" + bytes(200), [], ["ELF", "micropython.org/download"]),
    ("download.bin", b"<!DOCTYPE html><html><body>Not found</body></html>", [], ["web page"]),
    ("empty.bin", b"", [], ["empty"]),
    ("s3.bin", esp_image.merged("esp32s3"), ["--chip", "esp32"],
     ["ESP32-S3 image, not for an ESP32", "ESP32_GENERIC-*.bin", "micropython.org/download/ESP32_GENERIC/"]),
    ("truncated.bin", _truncated(), [], ["truncated", "0x10000", "ESP32_GENERIC"]),
    ("bootloader-only.bin", esp_image.merged("esp32")[:0x6000], [], ["truncated or only a bootloader", "0x8000"]),
    ("app-only.bin", esp_image.app("esp32"), [], ["application image only", "merged", "ESP32_GENERIC"]),
    ("corrupt.bin", _corrupt(), [], ["corrupt", "does not match"]),
    ("arduino.bin", esp_image.merged("esp32", project="arduino-lib-builder", version="3.1.0"), [],
     ["not MicroPython", "'arduino-lib-builder'", "--force"]),
]


@pytest.mark.parametrize("name, data, extra, words", WRONG, ids=[w[0] for w in WRONG])
def test_wrong_image_is_refused_before_touching_the_board(tmp_path, capsys, name, data, extra, words):
    path = write_file(tmp_path, name, data)
    rc, out, err = run(["--port", NOBODY, path] + extra, capsys)
    assert rc == 2, err
    assert "connecting" not in out
    assert len(err.strip().splitlines()) == 1, err  # one line: what is wrong and what to get instead
    for w in words:
        assert w in err, (w, err)


def test_missing_image_file(tmp_path, capsys):
    rc, out, err = run(["--port", NOBODY, str(tmp_path / "nothere.bin")], capsys)
    assert rc == 2 and "no such file" in err and "micropython.org/download" in err


# --- flashing through the mock ---------------------------------------------------------------

def test_flash_erases_writes_verifies_and_resets(tmp_path, esp32):
    board = Board(esp32)
    board.write(JUNK, JUNK_DATA)
    image = esp_image.merged("esp32")
    path = write_file(tmp_path, "ESP32_GENERIC-test.bin", image)
    t = time.monotonic()
    p = subprocess.run([sys.executable, FLASH_PY, "--port", esp32, path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.monotonic() - t < 20
    out = p.stdout
    assert "MicroPython v1.29.0 for the ESP32" in out
    assert "board: ESP32" in out and "MAC 24:0a:c4:" in out  # the mock's synthetic MAC
    assert "flash: 4MB" in out
    assert "erasing the flash ... done" in out
    assert "writing %d bytes at 0x1000: " % len(image) in out and "100%, verified (MD5)" in out
    assert "reset: the board starts MicroPython v1.29.0" in out
    assert len(out.splitlines()) <= 8  # a few lines, not a flood
    assert p.stderr == ""
    assert board.holds(0x1000, image)
    assert board.erased(0x0, 0x1000)
    assert board.erased(JUNK, len(JUNK_DATA))  # the whole flash was erased


def test_no_erase_keeps_the_rest_of_the_flash(tmp_path, capsys, esp32):
    board = Board(esp32)
    board.write(JUNK, JUNK_DATA)
    image = esp_image.merged("esp32")
    rc, out, err = run(["--port", esp32, "--no-erase", "--baud", "921600", write_file(tmp_path, "fw.bin", image)], capsys)
    assert rc == 0, err
    assert "erasing" not in out
    assert board.holds(0x1000, image)
    assert board.holds(JUNK, JUNK_DATA)


def test_esp32s3_image_goes_to_address_0(tmp_path, capsys, esp32s3):
    image = esp_image.merged("esp32s3")
    rc, out, err = run(["--port", esp32s3, "--chip", "esp32s3", write_file(tmp_path, "fw.bin", image)], capsys)
    assert rc == 0, err
    assert "board: ESP32-S3" in out and "at 0x0:" in out
    assert Board(esp32s3).holds(0x0, image)


def test_force_flashes_another_project(tmp_path, capsys, esp32):
    image = esp_image.merged("esp32", project="arduino-lib-builder", version="3.1.0")
    path = write_file(tmp_path, "arduino.bin", image)
    rc, out, err = run(["--port", esp32, path], capsys)
    assert rc == 2 and "--force" in err
    rc, out, err = run(["--port", esp32, "--force", path], capsys)
    assert rc == 0, err
    assert "not MicroPython" in out and "the board starts 'arduino-lib-builder'" in out
    assert Board(esp32).holds(0x1000, image)


def test_chip_option_against_another_chip(tmp_path, capsys, esp32):
    path = write_file(tmp_path, "s3.bin", esp_image.merged("esp32s3"))
    rc, out, err = run(["--port", esp32, "--chip", "esp32s3", path], capsys)
    assert rc == 2
    assert "board: ESP32" in out
    assert "the board is an ESP32, not an ESP32-S3 (--chip esp32s3); nothing was written" in err
    assert Board(esp32).erased(0x0, 0x20000)


def test_image_for_another_chip_than_the_board(tmp_path, capsys, esp32):
    path = write_file(tmp_path, "s3.bin", esp_image.merged("esp32s3"))
    rc, out, err = run(["--port", esp32, path], capsys)
    assert rc == 2
    assert "the image is for the ESP32-S3 but the board is an ESP32" in err
    assert "ESP32_GENERIC-*.bin" in err  # what the board needs


def test_image_for_more_flash_than_the_board_has(tmp_path, capsys, esp32):
    path = write_file(tmp_path, "8mb.bin", esp_image.merged("esp32", flash_mb=8))
    rc, out, err = run(["--port", esp32, path], capsys)
    assert rc == 2
    assert "flash: 4MB" in out
    assert "needs 8 MB of flash, the board has 4MB; nothing was written" in err
    assert Board(esp32).erased(0x0, 0x20000)


# --- port and board problems -----------------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_file(tmp_path_factory.mktemp("img"), "fw.bin", esp_image.merged("esp32"))


def test_port_that_does_not_exist(capsys, image):
    rc, out, err = run(["--port", "/dev/ttyNO_SUCH_PORT", image], capsys)
    assert rc == 1
    assert "/dev/ttyNO_SUCH_PORT: no such serial port" in err
    assert "serial ports found" in err
    if sys.platform.startswith("linux"):
        assert "dialout" in err


def test_nothing_listens_at_the_url(capsys, image):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, out, err = run(["--port", "socket://127.0.0.1:%d" % port, image], capsys)
    assert rc == 1 and "nothing answers" in err and "refused" in err


def test_board_that_never_answers(capsys, image):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])  # accepted, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        t = time.monotonic()
        rc, out, err = run(["--port", "socket://127.0.0.1:%d" % srv.getsockname()[1], image], capsys)
        took = time.monotonic() - t
    finally:
        srv.close()
        for c in held:
            c.close()
    assert rc == 1
    assert took < 15, took  # a few attempts, well under 30 s
    assert "no answer from the ESP bootloader" in err
    for hint in ("hold BOOT", "EN/RESET", "data lines", "--baud 115200", "CP210x", "CH340"):
        assert hint in err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_busy_port(capsys, image):
    import serial
    master, slave = os.openpty()
    path = os.ttyname(slave)
    holder = serial.Serial(path, exclusive=True)  # as mpremote or a serial monitor holds it
    try:
        rc, out, err = run(["--port", path, image], capsys)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)
    assert rc == 1
    assert "in use by another program" in err and "mpremote" in err and "Thonny" in err


@pytest.mark.parametrize("args, words", [
    (["--port", NOBODY, "--baud", "fast"], "expected a baud rate"),
    (["--port", NOBODY, "--baud", "100"], "out of range"),
    (["--port", NOBODY, "--chip", "esp9000"], "invalid choice"),
    ([], "required: --port"),
])
def test_bad_arguments(capsys, image, args, words):
    with pytest.raises(SystemExit) as e:
        flash.main(args + [image])
    assert e.value.code == 2
    assert words in capsys.readouterr().err
