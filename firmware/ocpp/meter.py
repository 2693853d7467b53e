"""Meter values (OCPP 1.6 sections 3.16, 4.7, 9.1.17-9.1.25): periodic samples of a transaction
(MeterValueSampleInterval, MeterValuesSampledData), clock-aligned ones (ClockAlignedDataInterval,
MeterValuesAlignedData), the StopTransaction's transactionData (StopTxnSampledData,
StopTxnAlignedData) and a triggered sample. The charger's metering is read through its view
(metering.Metering); the OCPP names of what it measures live here (measurands)."""
from firmware import Many
from firmware.ocpp import dt

TXDATA_VALUES = 10  # sampled values in a StopTransaction's transactionData: 1.3 KB of JSON at most

_UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A",
          "Current.Offered": "A", "Voltage": "V"}


class Meter:
    def __init__(self, cp):
        self.cp = cp
        self._next_sample = None
        self._last_aligned = None
        self._txdata = None
        self._txdata_every = 1
        self._txdata_seen = 0
        self._txdata_new()
        cp.config.listen(self._config_changed)

    def _config_changed(self, key, value):
        if key == "MeterValueSampleInterval":
            self._next_sample = None  # the new interval counts from now, also in a transaction

    # ---- the transaction -------------------------------------------------------------------

    def session_started(self, epoch):
        self._next_sample = None
        self._txdata_new()
        self._txdata_add("StopTxnSampledData", "Transaction.Begin", epoch)

    def session_ended(self, epoch):
        """The transactionData of the StopTransaction: the samples kept and the
        Transaction.End one (None when there are none)."""
        d = self._txdata
        self._txdata_new()
        end = self.samples("StopTxnSampledData", "Transaction.End", epoch)
        if end is not None:
            while d and _values(d) + _values(end) > TXDATA_VALUES:
                d.pop(len(d) // 2)
            d.append(end[0])
        return d or None

    # ---- every service round ------------------------------------------------------------

    def service(self, now, epoch):
        cp = self.cp
        cfg = cp.config
        clock = cp.clock
        tx = cp.tx.started()  # nothing of the transaction goes before its StartTransaction
        iv = cfg.get("MeterValueSampleInterval")
        if tx is not None and iv > 0:
            if self._next_sample is None:
                self._next_sample = clock.ticks_add(now, iv * 1000)
            elif clock.ticks_diff(now, self._next_sample) >= 0:
                self._next_sample = clock.ticks_add(self._next_sample, iv * 1000)
                if clock.ticks_diff(now, self._next_sample) >= 0:  # far behind: restart
                    self._next_sample = clock.ticks_add(now, iv * 1000)
                self._txdata_add("StopTxnSampledData", "Sample.Periodic", epoch)
                mv = self.samples("MeterValuesSampledData", "Sample.Periodic", epoch)
                if mv:
                    self._put_periodic({"connectorId": 1, "transactionId": -1, "meterValue": mv}, tx["n"])
        ai = cfg.get("ClockAlignedDataInterval")
        if ai > 0:
            slot = epoch // ai
            if self._last_aligned is None:
                self._last_aligned = slot
            elif slot != self._last_aligned:
                self._last_aligned = slot
                if cp.tx.current is not None:
                    self._txdata_add("StopTxnAlignedData", "Sample.Clock", slot * ai)
                mv = self.samples("MeterValuesAlignedData", "Sample.Clock", slot * ai)
                if mv:
                    if tx is not None:
                        self._put_periodic({"connectorId": 1, "transactionId": -1, "meterValue": mv}, tx["n"])
                    elif cp.boot.accepted:
                        cp.trigger("MeterValues", {"connectorId": 1, "meterValue": mv})

    def triggered(self):
        """A MeterValues body for TriggerMessage (MeterValuesSampledData, context Trigger), or
        None when nothing is configured to be sampled."""
        cp = self.cp
        mv = self.samples("MeterValuesSampledData", "Trigger", cp.wall.now())
        if mv is None:
            return None
        body = {"connectorId": 1, "meterValue": mv}
        tid = cp.tx.transaction_id()
        if tid is not None:
            body["transactionId"] = tid
        return body

    def _txdata_new(self):
        self._txdata = Many()  # StopTxnSampledData / AlignedData of the running transaction (RAM)
        self._txdata_every = 1  # of the samples taken, every so many is kept (thinned when full)
        self._txdata_seen = 0

    def _txdata_add(self, key, context, epoch):
        """A StopTxnSampledData / StopTxnAlignedData sample for the transactionData of the
        StopTransaction (9.1.24/25): kept in RAM, at most TXDATA_VALUES values with room left for
        the Transaction.End sample; when full every second sample after the first goes and only
        every second one from then on is kept, so that they stay spread over the session."""
        mv = self.samples(key, context, epoch)
        if mv is None:
            return
        d = self._txdata
        room = TXDATA_VALUES - len(self.cp.config.get("StopTxnSampledData"))
        if _values(d[:1]) + _values(mv) > room:
            return  # none beside the first (and the last) fits
        self._txdata_seen += 1
        if (self._txdata_seen - 1) % self._txdata_every:
            return
        d.append(mv[0])
        while _values(d) > room:
            self._txdata = d = Many(d[:1] + d[2::2])
            self._txdata_every *= 2

    def _put_periodic(self, payload, n):
        """Transaction MeterValues are periodic data: queued only outside the flash's reserve;
        one left out or refused is counted (the station's flash events report the count)."""
        fl = self.cp.st.flash
        if fl.periodic() and not self.cp.tx.put("MeterValues", payload, n):
            fl.refused += 1

    def samples(self, key, context, epoch):
        """[{"timestamp", "sampledValue": [...]}] for the measurands configured in `key`."""
        cp = self.cp
        want = cp.config.get(key)
        if not want:
            return None
        m = measurands(cp.st.metering, cp.charger.offer_da / 10)
        sv = []
        for name in want:
            v = m.get(name)
            if v is None and name not in m:
                # config.py accepts a measurand with its phase, "Current.Import.L1",
                # "Voltage.L2-N" (9.1.17: "the Measurand combined with the phase").
                k = name.rfind(".")
                w = m.get(name[:k]) if k > 0 else None
                if type(w) is dict and name[k + 1:] in w:
                    v = {name[k + 1:]: w[name[k + 1:]]}
                    name = name[:k]
            if v is None:
                continue
            unit = _UNITS.get(name)
            if type(v) is dict:
                for ph in v:
                    sv.append({"value": _num(v[ph]), "context": context, "measurand": name, "phase": ph,
                               "location": "Outlet", "unit": unit})
            else:
                sv.append({"value": _num(v), "context": context, "measurand": name, "location": "Outlet",
                           "unit": unit})
        if not sv:
            return None
        return [{"timestamp": dt.iso(epoch), "sampledValue": sv}]


def measurands(mt, offered_a):
    """What a metering.Metering `mt` measures, by the names of OCPP 1.6 (9.1.17, 7.31), for
    MeterValues: {measurand: value or {phase: value}}."""
    out = {"Current.Offered": offered_a}
    if mt.register_wh is None:
        return out
    out["Energy.Active.Import.Register"] = mt.register_wh
    if not mt.valid:
        return out
    out["Power.Active.Import"] = mt.power_w
    if mt.measures_current:
        a = mt.amps_ma
        v = mt.volts_dv
        out["Current.Import"] = {"L1": a[0] / 1000, "L2": a[1] / 1000, "L3": a[2] / 1000}
        out["Voltage"] = {"L1-N": v[0] / 10, "L2-N": v[1] / 10, "L3-N": v[2] / 10}
    return out


def _values(meter_values):
    """The number of sampled values in a list of MeterValue entries."""
    n = 0
    for e in meter_values:
        n += len(e["sampledValue"])
    return n


def _num(v):
    """A sampled value as OCPP wants it: a decimal string without needless digits."""
    if type(v) is float:
        if v == int(v):
            return "%d" % int(v)
        return ("%.3f" % v).rstrip("0").rstrip(".")
    return "%d" % v
