"""Run on the virtual ESP32 by tools/benchmark.py (--rows modules): the heap each module's objects
take once imported (module dictionary, classes, functions, module-level data).

    micropython-esp32 -X heapsize=N -m modram NAME ...

The names come in dependency order (tools/benchmark.py orders them by their top-level imports),
so that a module's own imports are already loaded when it is imported and its figure is its own.
For each name: gc.collect(), import it, gc.collect() again, and print
    MOD name bytes module...
where `bytes` is the growth of the live heap and the modules are all of sys.modules after it; the
caller takes the difference with the line before (normally the name alone; more when the order
missed an import, and then the bytes are theirs together). The probe keeps nothing between two
imports on the heap: the names are printed, not stored. `done` ends the output.

The harness's fake hardware (machine, network, esp32: on a board they are C modules in flash) is
imported first, as HARNESS, so that its objects are not counted as the firmware's. A name that
cannot be imported prints `MISSING name`.
"""
import gc
import sys

HARNESS = ("machine", "network", "esp32")


def measure(name):
    gc.collect()
    before = gc.mem_alloc()
    try:
        __import__(name)
    except ImportError:  # a fallback the firmware tries (e.g. zlib where binascii has no crc32)
        return None
    gc.collect()
    return gc.mem_alloc() - before


def main(names):
    for name in HARNESS:
        print("HARNESS", name, measure(name))
    print("BASE", " ".join(sys.modules))
    for name in names:
        grown = measure(name)
        if grown is None:
            print("MISSING", name)
        else:
            print("MOD", name, grown, " ".join(sys.modules))
    print("done")


main(sys.argv[1:])
