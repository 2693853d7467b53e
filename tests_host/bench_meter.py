"""Run under micropython by tools/benchmark.py: cost of one meter poll, per model.

Each model's driver polls a bus that replays the simulated meter (world/replay_meter.py), every
10 ms as the control task does, refreshing once a second. Prints per model:
    METER model polls mean_us max_us refresh_us alloc_bytes refreshes
refresh_us is the poll time summed over one complete refresh (all the model's reads).
"""
import gc
import sys
import time

from world.replay_meter import replay_meter

MODELS = ("sdm630", "sdm120", "sdm72d", "dtsu666", "ddsu666")
POLLS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000


def bench(model):
    m = replay_meter(model, interval_ms=1000)
    now = 0
    for _ in range(300):  # warm-up: buffers and plans are made on the first refreshes
        m.poll(now)
        now += 10
    gc.collect()
    a0 = gc.mem_alloc()
    total = 0
    worst = 0
    first = m.readings
    for _ in range(POLLS):
        t0 = time.ticks_us()
        m.poll(now)
        dt = time.ticks_diff(time.ticks_us(), t0)
        total += dt
        if dt > worst:
            worst = dt
        now += 10
    alloc = gc.mem_alloc() - a0
    refreshes = m.readings - first
    per_refresh = total // refreshes if refreshes else 0
    print("METER", model, POLLS, total // POLLS, worst, per_refresh, alloc, refreshes)


for name in MODELS:
    bench(name)
print("done")
