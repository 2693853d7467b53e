"""Run under micropython by test_alloc.py: heap allocated by the control tick while charging.

The Modbus exchange inside the tick runs against the simulated meter, whose replies the world
builds on the heap; that share is measured apart and left out here (test_modbus.py proves the
master and meter allocate nothing per poll against a replay UART).
"""
import gc
import sys

import simrun

import asyncio

sim = simrun.Sim(sys.argv[1])


async def charge():
    for verb, args in (("plug", [32]), ("ev-ready", [16, 3])):
        await sim.act(0, verb, args)
    await sim.run_for(20000)


asyncio.run(charge())
st = sim.station
assert st.charger.contactor, "not charging"

meter = st.meter
poll = meter.poll
world_share = [0]


class Measured:
    """Stands in for the meter in the station; forwards everything, counts poll's heap use."""

    def __getattr__(self, name):
        return getattr(meter, name)

    def poll(self, now):
        b = gc.mem_alloc()
        poll(now)
        world_share[0] += gc.mem_alloc() - b


st.meter = Measured()
worst = 0
for _ in range(500):
    sim.T += 10
    sim.clock.advance(10)
    sim.world.advance(sim.T)
    gc.collect()
    world_share[0] = 0
    before = gc.mem_alloc()
    st.tick()
    used = gc.mem_alloc() - before - world_share[0]
    if used > worst:
        worst = used
print("tick-alloc", worst)
