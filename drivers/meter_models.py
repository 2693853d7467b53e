"""Energy meter register maps: data, not code. drivers/meter.py reads them.

Per model:
  phases     1 or 3 (1-phase models report L2/L3 as 0)
  function   Modbus function for the readings (4 = read input registers)
  encoding   "float32": IEEE-754 single, big-endian, high word first (the only one so far)
  baudrate   factory default (8N1); address default 1
  reads      (first register, count) blocks, read in this order every refresh; only registers the
             datasheet lists (a read that touches an undocumented register may get exception 02)
  values     what each reading is made of: a register per phase for volts/amps, one register for
             power/energy; every register must lie inside one of the reads
  scale      register unit -> driver unit: V -> dV (x10), A -> mA (x1000), W -> W, kWh -> Wh (x1000)

Add a meter by adding an entry; a model that is not float32 needs a decoder in meter.py.
"""

_EASTRON_SCALE = {"volts_dv": 10, "amps_ma": 1000, "power_w": 1, "energy_wh": 1000}

MODELS = {
    # Eastron SDM630 Modbus Protocol (SDM630 V2 "Modbus Protocol" document, input registers,
    # function 04): phase 1..3 line-to-neutral volts 30001/3/5 = 0x0000/0x0002/0x0004, phase
    # 1..3 current 30007/9/11 = 0x0006/0x0008/0x000A, total system power 30053 = 0x0034,
    # import active energy kWh 30073 = 0x0048. 9600 baud 8N1 by default.
    "sdm630": {
        "phases": 3,
        "function": 4,
        "encoding": "float32",
        "baudrate": 9600,
        "reads": ((0x0000, 12), (0x0034, 2), (0x0048, 2)),
        "values": {
            "volts_dv": (0x0000, 0x0002, 0x0004),
            "amps_ma": (0x0006, 0x0008, 0x000A),
            "power_w": 0x0034,
            "energy_wh": 0x0048,
        },
        "scale": _EASTRON_SCALE,
    },
    # Eastron SDM120-Modbus protocol (input registers, function 04): voltage 30001 = 0x0000,
    # current 30007 = 0x0006, active power 30013 = 0x000C (no total system power register on a
    # 1-phase meter), import active energy 30073 = 0x0048. Registers between them are not all
    # documented, so each value is its own read. 2400 baud 8N1 by default.
    "sdm120": {
        "phases": 1,
        "function": 4,
        "encoding": "float32",
        "baudrate": 2400,
        "reads": ((0x0000, 2), (0x0006, 2), (0x000C, 2), (0x0048, 2)),
        "values": {
            "volts_dv": (0x0000,),
            "amps_ma": (0x0006,),
            "power_w": 0x000C,
            "energy_wh": 0x0048,
        },
        "scale": _EASTRON_SCALE,
    },
    # Eastron SDM230-Modbus protocol: the SDM120 map (voltage 0x0000, current 0x0006, active
    # power 0x000C, import active energy 0x0048, function 04). 2400 baud 8N1 by default.
    "sdm230": {
        "phases": 1,
        "function": 4,
        "encoding": "float32",
        "baudrate": 2400,
        "reads": ((0x0000, 2), (0x0006, 2), (0x000C, 2), (0x0048, 2)),
        "values": {
            "volts_dv": (0x0000,),
            "amps_ma": (0x0006,),
            "power_w": 0x000C,
            "energy_wh": 0x0048,
        },
        "scale": _EASTRON_SCALE,
    },
}

# Eastron SDM72D-M Modbus Protocol (input registers, function 04): the SDM630's map for volts
# 0x0000/2/4, current 0x0006/8/A, total system power 0x0034, import kWh 0x0048; 9600 baud 8N1.
MODELS["sdm72d"] = MODELS["sdm630"]
