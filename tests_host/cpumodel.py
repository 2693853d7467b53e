"""The virtual ESP32's CPU model: what the firmware executes, in ESP32 milliseconds.

The virtual ESP32 (tools/vm.py) counts, deterministically, what its interpreter does (the
`vesp` module, third_party/vesp/README.md): bytecodes dispatched (`ops`), heap allocations and the
bytes they ask for, and bytes C code builds into strings or reads as JSON. The simulated
hardware's own Python code is not counted (the fake `machine` pauses the counters); the time an
ADC conversion takes is charged in microseconds that do not scale with the clock (`wait_us`).

Cost of a piece of work at the ESP32's 160 MHz, in hundredths of an op ("cops"):

    cops = 100 * ops + W_ALLOC * allocs + W_BYTE * (alloc_bytes + bytes)
    us   = cops * PS_PER_COP_160 / 1e6 * 160 / MHz + wait_us

Calibration (docs/benchmarks.md, "CPU on the real chip"; `tools/cpucal.py` redoes it):
MicroPython's tests/perf_bench (micropython/micropython c8b71b0, N=100 M=100) run on the virtual
ESP32 gave the counts per benchmark; the published ESP32 scores of the same benchmarks
(micropython/micropython issue #6565, v1.13-180, a stock image at its default 160 MHz) give the
ESP32's microseconds for the same work (1e6 * norm / score). A least-squares fit of
us = a*ops + b*allocs + c*bytes on relative error fixes the weights' proportions (b/a, c/a);
the scale is then set so that the median benchmark is predicted exactly. Single benchmarks stay
within a factor of about 0.4 to 1.8 of the published time (the model does not know that a CALL
costs more than a LOAD_FAST). 240 MHz is 160 MHz scaled by 160/240: an optimistic bound, as the
flash cache and the RAM do not speed up with the core.

Integer arithmetic throughout: the harness runs on the virtual ESP32 itself (single-precision
floats) and its figures must not depend on rounding.
"""

W_ALLOC = 490  # cops per heap allocation (4.9 ops)
W_BYTE = 36  # cops per byte allocated, built into a string or parsed as JSON (0.36 op)
PS_PER_COP_160 = 6410  # picoseconds per cop at 160 MHz: 0.641 us per op
CAL_MHZ = 160

# name: (norm, ops, allocs, alloc_bytes, bytes) counted on the virtual ESP32 at N=100 M=100, and
# the published ESP32 score (issue #6565, v1.13-180-g5af3c046c, 160 MHz): the calibration's input.
PERF_BENCH = {
    "bm_chaos": ((50, 120008, 14440, 181792, 0), 204.19),
    "bm_fannkuch": ((6, 109084, 8931, 147208, 0), 80.12),
    "bm_fft": ((768, 561361, 20185, 246568, 0), 2707.87),
    "bm_float": ((250, 33273, 4508, 49260, 0), 3368.39),
    "bm_hexiom": ((10, 192965, 2716, 62155, 61), 24.51),
    "bm_nqueens": ((1000, 206967, 25910, 486544, 0), 2792.79),
    "bm_pidigits": ((65, 30071, 9147, 505430, 0), 475.01),
    "misc_aes": ((32, 128221, 98, 8232, 0), 413.36),
    "misc_mandel": ((400, 104799, 15333, 160152, 0), 3174.19),
    "misc_pystone": ((300, 149495, 1510, 42492, 600), 1166.32),
}


def cops(counts):
    """Cost in cops of (ops, allocs, alloc_bytes, bytes, ...) (vesp.take()'s first four)."""
    return 100 * counts[0] + W_ALLOC * counts[1] + W_BYTE * (counts[2] + counts[3])


def us_at(c, wait_us, mhz):
    """ESP32 microseconds of `c` cops plus `wait_us` clock-independent microseconds at `mhz`."""
    return c * PS_PER_COP_160 * CAL_MHZ // (1000000 * mhz) + wait_us


def published_us(norm, score):
    """The ESP32's time for a perf_bench run from its published score (run-perfbench.py:
    score = 1e6 * norm / time_us)."""
    return 1000000 * norm / score


def fit(rows):
    """Weights (a us/op, b us/alloc, c us/byte) for `rows` [(ops, allocs, bytes, us)]: least squares
    of the relative error, then scaled so that the median row is predicted exactly. Returns
    (a, b, c, ratios) with ratios = predicted / published per row."""
    x = [[r[0] / r[3], r[1] / r[3], r[2] / r[3]] for r in rows]
    m = [[sum(v[i] * v[j] for v in x) for j in range(3)] + [sum(v[i] for v in x)] for i in range(3)]
    for i in range(3):  # Gauss-Jordan with partial pivoting on the 3x3 normal equations
        p = max(range(i, 3), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        for r in range(3):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [a - f * b for a, b in zip(m[r], m[i])]
    w = [m[i][3] / m[i][i] for i in range(3)]
    ratios = sorted(sum(w[j] * v[j] for j in range(3)) for v in x)
    n = len(ratios)
    med = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
    w = [v / med for v in w]
    return w[0], w[1], w[2], [sum(w[j] * v[j] for j in range(3)) for v in x]


def calibration_rows(table=PERF_BENCH):
    return [(c[1], c[2], c[3] + c[4], published_us(c[0], score)) for c, score in table.values()]


class Meter:
    """Charges what the interpreter counts to labels: `switch(label)` ends the current label's
    stretch (one non-yielding step of it) and starts the next. Per label: steps, total and worst
    in cops and clock-independent us. `pending` collects the firmware's cost since the last
    `late_ms` call (for the simulator's --cpu)."""

    HARNESS = "harness"

    LABELS = ("tick", "service", "asyncio", "link")

    def __init__(self, vesp, mhz=None):
        self.vesp = vesp
        self.mhz = mhz
        self.label = self.HARNESS
        # label: [steps, total cops, total wait_us, worst us at 160 MHz, its cops, its wait]. Made
        # here, once: the harness allocates nothing that stays during a run (its heap is measured
        # before the first boot, tools/sim.py).
        self.stats = {k: [0, 0, 0, -1, 0, 0] for k in self.LABELS}
        self.main = None  # the harness's main task (the first one asyncio runs)
        self.helpers = []  # the harness's other tasks (the back end's control calls)
        self.pending_us = 0
        vesp.take()

    def switch(self, label):
        was = self.vesp.enable(0)
        c = self.vesp.take()
        self._charge(self.label, c)
        self.label = label
        self.vesp.enable(was)

    def _charge(self, label, c):
        if label == self.HARNESS:
            return
        k = cops(c)
        w = c[4]
        s = self.stats[label]
        s[0] += 1
        s[1] += k
        s[2] += w
        us = us_at(k, w, CAL_MHZ)
        if us > s[3]:
            s[3] = us
            s[4] = k
            s[5] = w
        if self.mhz:
            self.pending_us += us_at(k, w, self.mhz)

    def task_step(self, task):
        """asyncio.core.step_hook: None when the scheduler takes over, else the task about to run.
        Every task that is not the harness's is the link's (the firmware's only asyncio tasks in
        the simulator: tick and slow round are called by the harness)."""
        if task is None:
            self.switch("asyncio")
            return
        if self.main is None:
            self.main = task
        self.switch(self.HARNESS if task is self.main or task in self.helpers else "link")

    def late_ms(self, step_ms):
        """Whole ms by which the firmware's CPU work since the last call overran `step_ms`; the
        overrun is taken out of `pending`, the rest of the step's work is forgiven (it fitted)."""
        late = 0
        if self.pending_us > step_ms * 1000:
            late = (self.pending_us - step_ms * 1000 + 999) // 1000
        self.pending_us = 0
        return late

    def report(self, elapsed_ms, mhzs=(160, 240)):
        """The `cpu` event's fields: per label steps, mean and worst ms at each clock, and the
        share of the CPU it took over `elapsed_ms` of virtual time."""
        out = {"elapsed_ms": elapsed_ms}
        for label in self.LABELS:
            n, k, w, _, wk, ww = self.stats[label]
            if not n:
                continue
            row = {"steps": n}
            for mhz in mhzs:
                total = us_at(k, w, mhz)
                row["mean_ms_%d" % mhz] = round(total / n / 1000, 3)
                row["worst_ms_%d" % mhz] = round(us_at(wk, ww, mhz) / 1000, 3)
                row["share_%d" % mhz] = round(total / (elapsed_ms * 10), 2) if elapsed_ms else None
            row["cops"] = k
            out[label] = row
        return out
