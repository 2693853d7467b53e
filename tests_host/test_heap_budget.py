"""The virtual ESP32's heap is the budget: a story that fits in it fails just below its need.

tools/sim.py --heap is the board's whole MicroPython heap (module objects, asyncio and all the
firmware's data). If something were left out of the count, a heap below the measured peak could
still pass; this test shows it cannot: the same story, with the heap 1 KB under the live peak it
reported, runs out of memory (a MemoryError that ends the run, or slow rounds given up for one).
No back end (--csms none): the run is the same every time.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIM = os.path.join(ROOT, "tools", "sim.py")
STORY = os.path.join(HERE, "scenarios", "normal_session.scn")


def run(tmp, heap):
    events = os.path.join(tmp, "%d.jsonl" % heap)
    p = subprocess.run([sys.executable, SIM, "--scenario", STORY, "--csms", "none", "--heap", str(heap),
                        "--events", events, "--quiet"], capture_output=True, text=True, timeout=300)
    heaps = []
    if os.path.exists(events):
        with open(events) as f:
            heaps = [e for e in map(json.loads, f) if e["type"] == "heap"]
    return p.returncode, p.stdout + p.stderr, heaps[-1] if heaps else None


def test_a_story_runs_out_of_memory_just_below_its_measured_need(tmp_path):
    rc, out, heap = run(str(tmp_path), 96 * 1024)
    assert rc == 0 and heap["out_of_memory"] == 0, out
    below = heap["peak"] // 1024 * 1024 - 1024  # under the live peak: that data cannot fit
    rc, out, heap = run(str(tmp_path), below)
    assert (rc != 0 and "MemoryError" in out) or (heap is not None and heap["out_of_memory"] > 0), \
        "the story passed in %d bytes, below its live peak: the heap does not count everything\n%s" % (below, out[-2000:])
