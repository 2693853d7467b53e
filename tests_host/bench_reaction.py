"""Real-time benchmark of the control loop on the virtual board (run by tools/benchmark.py).

    bench_reaction.py MODE TRIALS SEED

Runs on the virtual ESP32 (frozen in, tools/vm.py) with the working directory as the board's
flash (board.json, settings.json) like simrun.py. The station runs on the real clock (SystemClock) as on the board: a control
task ticks every 10 ms (world.advance(now) first), a slow task calls service() every 100 ms.

MODE
  c-b    the car stops (ev-pause, C -> B)
  e      the pilot is shorted to PE (state E)
  diode  the car's diode fails
  rcd    the RCD output goes active (machine.hw_set_input on rcd.pin): its pin IRQ opens the
         relay inside hw_set_input, so this is the IRQ path alone
  tick   no trials: TRIALS control ticks while charging
For the first four, a task injects the change at a random moment while the car charges and
stamps it with time.ticks_us(); the relay output's hw_on_output hook stamps the open command.
Then the world is put right and the faults are cleared as a person would (station.clear_fault),
skipping the 30 s retry pause, the contactor's wear count is reset (charger.reset_wear: a trial
a second is far beyond its limit of ten closings a minute), and the car charges again before the
next trial.

Output, one line each: `react US` per trial, or `tick US` per tick and `service US` per
service() call during them; then `done`.
"""
import sys

import asyncio
import machine
import random
import time
from world.world import World

TICK_MS = 10
SERVICE_MS = 100
OPEN_TIMEOUT_MS = 1000
RECOVER_TIMEOUT_MS = 5000
MODES = ("c-b", "e", "diode", "rcd", "tick")


class BenchError(Exception):
    pass


class Bench:
    def __init__(self, mode, trials):
        from drivers import board
        from firmware import station
        from firmware.clock import SystemClock

        self.mode = mode
        self.trials = trials
        self.profile = board.load_installed("")
        self.world = World(self.profile)
        self.world.car.react_ms = 0  # a ready car closes S2 at once: quicker trials
        self.clock = SystemClock()
        self.station = station.start("", self.clock)
        self.done = False
        self.t_open = None  # ticks_us of the relay open command, while armed
        self.armed = False
        relay = self.profile["relay"]
        self._open_level = 0 if relay["active_high"] else 1
        self._world_relay = self.world._on_relay_fn  # the world still sees the coil
        machine.hw_on_output(relay["pin"], self._on_relay)
        rcd = self.profile["rcd"]
        self.rcd_pin = rcd["pin"]
        self.rcd_on = 1 if rcd["active_high"] else 0
        self.ticks = None
        self.services = None

    def _on_relay(self, level):
        # May run inside the RCD's hard IRQ: no allocation.
        if self.armed and level == self._open_level:
            self.t_open = time.ticks_us()
            self.armed = False
        self._world_relay(level)

    # ---- the two tasks of the board (firmware.station.Station.run) ----

    async def control(self):
        st = self.station
        world = self.world
        clock = self.clock
        n = 0
        while not self.done:
            world.advance(clock.ticks_ms())
            t0 = time.ticks_us()
            st.tick()
            us = time.ticks_diff(time.ticks_us(), t0)
            rec = self.ticks
            if rec is not None:
                rec[n] = us
                n += 1
                self.done = n == len(rec)
            await asyncio.sleep_ms(TICK_MS)

    async def slow(self):
        st = self.station
        while not self.done:
            t0 = time.ticks_us()
            st.service()
            if self.services is not None:
                self.services.append(time.ticks_diff(time.ticks_us(), t0))
            await asyncio.sleep_ms(SERVICE_MS)

    # ---- the trials ----

    def charging(self):
        return self.station.hw.relay.closed() and self.world.relay.closed

    async def until(self, cond, timeout_ms, what):
        t0 = self.clock.ticks_ms()
        while not cond():
            if self.clock.ticks_diff(self.clock.ticks_ms(), t0) > timeout_ms:
                raise BenchError("%s: %s within %d ms" % (self.mode, what, timeout_ms))
            await asyncio.sleep_ms(1)

    async def recover(self):
        """Put the world right, clear the faults as a person would, wait for charging."""
        world = self.world
        m = self.mode
        if m == "c-b":
            world.apply("ev-ready", [16])
        elif m in ("e", "diode"):
            world.apply("pilot-ok")
        else:
            machine.hw_set_input(self.rcd_pin, 1 - self.rcd_on)
        st = self.station
        t0 = self.clock.ticks_ms()
        st.charger.reset_wear()  # a trial a second is far beyond the contactor's wear limit, on purpose
        while not self.charging():
            for code in st.charger.faults.codes():
                st.clear_fault(code)  # skips the retry pause: a benchmark, not a charge
            if self.clock.ticks_diff(self.clock.ticks_ms(), t0) > RECOVER_TIMEOUT_MS:
                raise BenchError("%s: no charging again within %d ms (state %s, faults %s)"
                                 % (m, RECOVER_TIMEOUT_MS, st.charger.state, st.charger.faults.codes()))
            await asyncio.sleep_ms(TICK_MS)

    def inject(self):
        m = self.mode
        if m == "c-b":
            self.world.apply("ev-pause")
        elif m == "e":
            self.world.apply("pilot-short")
        elif m == "diode":
            self.world.apply("diode-fault")
        else:
            machine.hw_set_input(self.rcd_pin, self.rcd_on)

    async def run_trials(self):
        await self.until(self.charging, RECOVER_TIMEOUT_MS, "no charging")
        for _ in range(self.trials):
            await asyncio.sleep_ms(random.randint(0, 2 * TICK_MS))  # a random tick phase
            if not self.charging():
                raise BenchError("%s: stopped charging by itself (state %s, faults %s)"
                                 % (self.mode, self.station.charger.state, self.station.charger.faults.codes()))
            self.t_open = None
            self.armed = True
            t0 = time.ticks_us()
            self.inject()
            await self.until(lambda: self.t_open is not None, OPEN_TIMEOUT_MS, "no open command")
            print("react", time.ticks_diff(self.t_open, t0))
            await self.recover()
        self.done = True

    async def run_ticks(self):
        await self.until(self.charging, RECOVER_TIMEOUT_MS, "no charging")
        import array

        self.services = []
        self.ticks = array.array("i", (0 for _ in range(self.trials)))
        while not self.done:
            await asyncio.sleep_ms(SERVICE_MS)
        for us in self.ticks:
            print("tick", us)
        for us in self.services:
            print("service", us)

    async def main(self):
        self.world.apply("plug", [32])
        self.world.apply("ev-ready", [16])
        ctl = asyncio.create_task(self.control())
        slow = asyncio.create_task(self.slow())
        try:
            if self.mode == "tick":
                await self.run_ticks()
            else:
                await self.run_trials()
        finally:
            self.done = True
        await ctl
        await slow


def main(argv):
    if len(argv) != 4 or argv[1] not in MODES:
        print(__doc__)
        return 2
    random.seed(int(argv[3]))
    bench = Bench(argv[1], int(argv[2]))
    try:
        asyncio.run(bench.main())
    except BenchError as e:
        print("error:", e)
        return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
