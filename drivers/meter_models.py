"""Energy meter register maps: data, not code. drivers/meter.py reads them.

Per model (drivers.meter.check_model checks every entry when the model is used; a bad entry is
a ValueError naming the model and the entry):
  phases     1 or 3 (1-phase models report L2/L3 as 0)
  function   Modbus function that reads the values: 3 (read holding registers) or 4 (read input
             registers)
  encoding   how a value sits in its registers; "float32": IEEE-754 single, big-endian, high word
             first, two registers a value (the only one so far; meter.ENCODINGS lists them)
  baudrate   factory default (8N1); address default 1
  reads      ((first register, count), ...) blocks, read in this order every refresh; only
             registers the datasheet lists (a read that touches an undocumented register may get
             exception 02); count 1..125
  values     what each reading is made of: "volts_dv" and "amps_ma" a sequence with one register
             per phase (`phases` of them), "power_w" (total active power) and "energy_wh"
             (imported active energy) one register each; every value must lie inside one read
  scale      register value -> driver unit, per value name: an int multiplies (V -> dV: 10,
             A -> mA: 1000, kW -> W: 1000, kWh -> Wh: 1000), a pair (multiplier, divisor)
             multiplies then divides, rounding half away from zero (0.1 W -> W: (1, 10)). The odd
             part of a multiplier must be at most 127 (1000 = 125 * 8 is fine). Readings beyond
             +-2**30 driver units, or with a divisor |register value * multiplier| >= 2**30,
             saturate to +-(2**30 - 1) (the decoder stays in small ints on the ESP32).

Add a meter by adding an entry; a scaled register (volts in 0.1 V, power in 0.1 W, ...) is a
scale, not code. A new register layout (say int32, or low word first) is one more encoding in
meter.py's decoder, for every model.
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
    # Chint DTSU666 (3-phase 4-wire DIN-rail meter; the DSSU666 is its 3-wire sibling).
    # Source: Chint "DTSU666 series and DSSU666 series three phase electronic energy meter, User
    # manual" (ZTY0.464.1448; also ZTW0.464.0104 of 2023-11-14), 5.3 "Communication function",
    # table 11 "ModBus protocol address table": Modbus-RTU read command 03H (holding registers),
    # write command 10H; 9600 baud, N.8.1, address 1 by default. The electricity data block holds
    # IEEE-754 floats (ABCD: high word first) in scaled units: 2006H/2008H/200AH Ua/Ub/Uc in
    # 0.1 V (the register value is already decivolts), 200CH/200EH/2010H Ia/Ib/Ic in 0.001 A
    # (already milliamps), 2012H Pt total active power in 0.1 W, and 401EH ImpEp, the imported
    # (positive) total active energy, in kWh (unscaled). Cross-checked with the register lists
    # of the Domoticz plugin elfabriceu/DTSU666-Modbus (same addresses, function 03, /10, /1000,
    # /10) and the aggsoft DSU666/DTSU666 map (8198 = 2006H ... 16414 = 401EH). Huawei's
    # DTSU666-H is a different map (unscaled values) and is not this model.
    # 2006H..2013H is one documented run (U, I, Pt): one read of 14 registers, then the energy.
    "dtsu666": {
        "phases": 3,
        "function": 3,
        "encoding": "float32",
        "baudrate": 9600,
        "reads": ((0x2006, 14), (0x401E, 2)),
        "values": {
            "volts_dv": (0x2006, 0x2008, 0x200A),
            "amps_ma": (0x200C, 0x200E, 0x2010),
            "power_w": 0x2012,
            "energy_wh": 0x401E,
        },
        "scale": {"volts_dv": 1, "amps_ma": 1, "power_w": (1, 10), "energy_wh": 1000},
    },
    # Chint DDSU666 (1-phase DIN-rail meter). Source: Chint "DDSU666 single-phase electronic
    # energy meter (DIN-rail)" user manuals ZTY0.464.922 / ZTY0.464.1036, appendix A
    # (MODBUS-RTU), as summarised by the mbmap library's chint/ddsu666 map: function 03 reads
    # and 10H writes; IEEE-754 floats, high word first, in engineering units: 2000H U (V),
    # 2002H I (A), 2004H P active power (kW), 4000H imported active energy (kWh). The same
    # addresses and units are used by Tasmota's xnrg_11_ddsu666 (0x2000 V, 0x2002 A,
    # 0x2004 kW, 0x4000 import kWh, 9600 baud) and the ESP485 ESPHome configuration (holding
    # registers). Note: the meter ships speaking DL/T 645-2007; its protocol setting must be
    # switched to Modbus-RTU. 9600 baud 8N1, address 1.
    # 2000H..2005H is one documented run (U, I, P): one read of 6 registers, then the energy.
    "ddsu666": {
        "phases": 1,
        "function": 3,
        "encoding": "float32",
        "baudrate": 9600,
        "reads": ((0x2000, 6), (0x4000, 2)),
        "values": {
            "volts_dv": (0x2000,),
            "amps_ma": (0x2002,),
            "power_w": 0x2004,
            "energy_wh": 0x4000,
        },
        "scale": {"volts_dv": 10, "amps_ma": 1000, "power_w": 1000, "energy_wh": 1000},
    },
}

# Eastron SDM72D-M Modbus Protocol (input registers, function 04): the SDM630's map for volts
# 0x0000/2/4, current 0x0006/8/A, total system power 0x0034, import kWh 0x0048; 9600 baud 8N1.
MODELS["sdm72d"] = MODELS["sdm630"]

# Eastron SDM230-Modbus protocol: the SDM120 map (voltage 0x0000, current 0x0006, active power
# 0x000C, import active energy 0x0048, function 04). 2400 baud 8N1 by default.
MODELS["sdm230"] = MODELS["sdm120"]
