"""The ESP32's flash filesystem for the virtual board: MicroPython's own LittleFS v2 on a block
device that counts what the flash lives through (`tools/sim.py --flash-fs littlefs`).

The geometry and the calls are the ESP32 port's (MicroPython v1.28.0):
- ports/esp32/main.c adds a "vfs" partition from the end of the last partition of the table to
  the end of the flash: with partitions-4MiBplus.csv (factory app ends at 0x200000) on a 4 MB
  chip that is 0x200000 bytes, BLOCKS blocks of BLOCK bytes (esp32_partition.c's
  NATIVE_BLOCK_SIZE_BYTES, the flash's erase sector);
- modules/inisetup.py makes the filesystem on an erased partition with `vfs.VfsLfs2.mkfs(bdev)`
  and modules/_boot.py mounts it with `vfs.mount(bdev, "/")` (autodetected, so VfsLfs2's
  defaults: readsize = progsize = lookahead = 32, mtime on; extmod/vfs_lfsx.c sets
  block_cycles = 100 and a cache of 128 bytes).
Here the filesystem is mounted at MOUNT and made the working directory, which the firmware
treats as its flash root exactly as it treats `/` on the board.

The flash is a host file (the image) so that it outlives the interpreter: every boot after a
power cut runs in a fresh one (tests_host/simrun.py). It holds the partition's bytes, then the
counters (TRAILER): what belongs to the world is kept out of the firmware's heap as far as it
goes (a few hundred bytes of arrays, counted as the world's by simrun's probe run).

The device behaves as NOR flash: an erase sets a block's bytes to 0xFF; a program can only clear
bits (the new bytes are ANDed into the old). LittleFS only programs erased bytes; a program over
bytes that are not all 0xFF is counted (`unerased_progs`), so a broken protocol shows up in the
figures instead of being papered over by a file that simply takes the new bytes.
"""
import os
import vfs
from array import array

from pathx import exists

BLOCK = 4096  # bytes: the ESP32 flash's erase sector, the partition's block size
BLOCKS = 512  # 0x200000 bytes: the "vfs" partition of the default 4 MB layout
MOUNT = "/flash"
MAGIC = b"WEAR"
# The counters after the partition's bytes: MAGIC, then STATS uint32 (little-endian, as both the
# 32-bit x86 interpreter and struct "<I" on the host read them), then one uint32 per block: its
# erases since the filesystem was made and the seed files copied in (see `attach`).
STATS = ("reads", "read_bytes", "progs", "prog_bytes", "setup_erases", "unerased_progs")
TRAILER = len(MAGIC) + 4 * (len(STATS) + BLOCKS)

IOCTL_INIT, IOCTL_DEINIT, IOCTL_SYNC, IOCTL_BLOCK_COUNT, IOCTL_BLOCK_SIZE, IOCTL_BLOCK_ERASE = 1, 2, 3, 4, 5, 6
EIO = 5


class Flash:
    """MicroPython's extended block protocol (readblocks/writeblocks with an offset, ioctl with
    erase) over the image file, counting reads, programs and erases per block."""

    def __init__(self, path):
        self.path = path
        self.new = not exists(path)
        self._ff = memoryview(b"\xff" * BLOCK)  # an erased block
        # (one scratch block for the read-back before a program: no allocation per call but
        # two small memoryview slices, garbage)
        self._scratch = memoryview(bytearray(BLOCK))
        self.stats = array("I", [0] * len(STATS))
        self.erases = array("I", [0] * BLOCKS)
        if self.new:
            # A chip erased at the factory (or by `esptool.py erase_flash`): all 0xFF, which
            # inisetup.check_bootsec() requires before it makes the filesystem.
            with open(path, "wb") as f:
                for _ in range(BLOCKS):
                    f.write(self._ff)
                f.write(MAGIC)
                f.write(bytes(TRAILER - len(MAGIC)))
        self._f = open(path, "r+b")
        if not self.new:
            self._load()

    def _load(self):
        f = self._f
        f.seek(BLOCKS * BLOCK)
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("%s: not a flash image of this simulator (no counters after %d bytes)"
                             % (self.path, BLOCKS * BLOCK))
        f.readinto(self.stats)
        f.readinto(self.erases)

    def flush(self):
        """Write the counters into the image (at every power cut and at the end of the run: the
        interpreter only ends through those; a crash loses the counts since the last one)."""
        f = self._f
        f.seek(BLOCKS * BLOCK + len(MAGIC))
        f.write(self.stats)
        f.write(self.erases)

    def close(self):
        self.flush()
        self._f.close()

    def _span(self, n, off, length):
        start = n * BLOCK + off
        if n < 0 or off < 0 or start + length > BLOCKS * BLOCK:
            raise OSError(EIO, "block %d offset %d length %d is outside the partition" % (n, off, length))
        return start

    # ---- the block protocol ----

    def readblocks(self, n, buf, off=0):
        start = self._span(n, off, len(buf))
        st = self.stats
        st[0] += 1
        st[1] += len(buf)
        self._f.seek(start)
        self._f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:
            # The simple protocol: whole blocks, each erased first, as esp32_partition.c does it.
            # (LittleFS uses the extended one only: an offset, erases by ioctl.)
            mv = memoryview(buf)
            for i in range(len(buf) // BLOCK):
                self.erase(n + i)
                self._prog(n + i, 0, mv[i * BLOCK:(i + 1) * BLOCK])
            return
        self._prog(n, off, buf)

    def _prog(self, n, off, buf):
        length = len(buf)
        if off + length > BLOCK:
            raise OSError(EIO, "a program of %d bytes at offset %d crosses block %d's end" % (length, off, n))
        start = self._span(n, off, length)
        st = self.stats
        st[2] += 1
        st[3] += length
        f = self._f
        old = self._scratch[:length]
        f.seek(start)
        f.readinto(old)
        f.seek(start)
        if old == self._ff[:length]:
            f.write(buf)
            return
        # NOR flash: a program clears bits and never sets them.
        st[5] += 1
        for i in range(length):
            old[i] &= buf[i]
        f.write(old)

    def erase(self, n):
        self._span(n, 0, BLOCK)
        self.erases[n] += 1
        self._f.seek(n * BLOCK)
        self._f.write(self._ff)

    def ioctl(self, op, arg):
        if op in (IOCTL_INIT, IOCTL_DEINIT, IOCTL_SYNC):
            return 0
        if op == IOCTL_BLOCK_COUNT:
            return BLOCKS
        if op == IOCTL_BLOCK_SIZE:
            return BLOCK
        if op == IOCTL_BLOCK_ERASE:
            self.erase(arg)
            return 0
        return None

    # ---- figures ----

    def report(self):
        """The flash's wear since the filesystem was made (the `wear` event)."""
        worst = 0
        total = 0
        touched = 0
        for i in range(BLOCKS):
            e = self.erases[i]
            total += e
            if e:
                touched += 1
            if e > self.erases[worst]:
                worst = i
        out = {"blocks": BLOCKS, "block_size": BLOCK, "erases": total, "worst_block": worst,
               "worst_erases": self.erases[worst], "mean_erases": round(total / BLOCKS, 3),
               "blocks_erased": touched}
        for i in range(len(STATS)):
            out[STATS[i]] = self.stats[i]
        try:
            s = os.statvfs(MOUNT)
            out["used_blocks"] = s[2] - s[3]
        except OSError:
            pass
        return out


def _same(path_a, path_b):
    try:
        with open(path_a, "rb") as a, open(path_b, "rb") as b:
            return a.read() == b.read()
    except OSError:
        return False


def seed(src, skip=None):
    """Copy the top-level files of the host directory `src` (what tools/sim.py's prepare_flash
    put there: board.json, settings.json, ca.pem), but `skip`, into the working directory (the
    mounted filesystem), as a deploy would. A file already there with the same bytes is left
    alone, so a second call (the probe run, then the run's first boot) programs and erases
    nothing."""
    for entry in os.ilistdir(src):
        name, kind = entry[0], entry[1]
        if kind & 0x4000 or name == skip:
            continue  # (directories: the seed is flat)
        host = src + "/" + name
        if _same(host, name):
            continue
        with open(host, "rb") as f:
            data = f.read()
        with open(name, "wb") as f:
            f.write(data)


def attach(image, copy=True):
    """The board's flash: the image (made and formatted when it does not exist, as inisetup.py
    does on a new board), mounted at MOUNT and made the working directory. With `copy`, the
    files of the working directory before (the host's flash directory) are copied in (`seed`).
    The counters of a new image start after that: making the filesystem and putting the files on
    is the factory's part, once in a board's life (`setup_erases` keeps its erases). Returns the
    Flash."""
    src = os.getcwd()
    dev = Flash(image)
    if dev.new:
        vfs.VfsLfs2.mkfs(dev)
    vfs.mount(dev, MOUNT)
    os.chdir(MOUNT)
    if copy:
        # (the image lives in the host directory too: it is not a file of the board)
        name = image.rsplit("/", 1)[-1]
        here = image[: len(image) - len(name)].rstrip("/")
        if here and here != src:
            name = None
        seed(src, name)
    if dev.new:
        total = 0
        for i in range(BLOCKS):
            total += dev.erases[i]
            dev.erases[i] = 0
        for i in range(len(STATS)):
            dev.stats[i] = 0
        dev.stats[STATS.index("setup_erases")] = total
        dev.new = False
    dev.flush()
    return dev
