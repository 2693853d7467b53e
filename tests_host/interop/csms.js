// A third-party OCPP 1.6J central system for the interop check (tests_host/test_interop.py):
// npm's ocpp-rpc in strict mode, which validates every call and every answer, both ways, against
// the official OCPP 1.6 JSON schemas. It answers the charger like a plain operator's back end and
// runs a fixed list of commands once the charger has booted; it stops the first transaction
// remotely at its first MeterValues. Every event is a JSON line on stdout:
//   {"listening": port}
//   {"t": ms, "ev": "connect" | "close", "identity": ...}
//   {"t": ms, "ev": "call", "method": ..., "params": ...}            the charger called
//   {"t": ms, "ev": "command", "method": ..., "params": ..., "result" | "error": ...}
//   {"t": ms, "ev": "invalid", "error": ...}                          strict validation failed
// It exits when its standard input closes.
"use strict";
const { RPCServer } = require("ocpp-rpc");

const t0 = Date.now();
const log = (o) => process.stdout.write(JSON.stringify(Object.assign({ t: Date.now() - t0 }, o)) + "\n");

const COMMANDS = [
    ["GetConfiguration", {}],
    ["ChangeConfiguration", { key: "MeterValueSampleInterval", value: "10" }],
    ["GetConfiguration", { key: ["MeterValueSampleInterval", "NoSuchKey"] }],
    ["TriggerMessage", { requestedMessage: "StatusNotification", connectorId: 1 }],
    ["SendLocalList", {
        listVersion: 4, updateType: "Full", localAuthorizationList: [
            { idTag: "CARD-A", idTagInfo: { status: "Accepted" } },
            { idTag: "CARD-B", idTagInfo: { status: "Blocked" } },
            { idTag: "CARD-C", idTagInfo: { status: "Accepted", parentIdTag: "FLEET", expiryDate: "2031-01-01T00:00:00.000Z" } },
        ],
    }],
    ["GetLocalListVersion", {}],
    ["SetChargingProfile", {
        connectorId: 1, csChargingProfiles: {
            chargingProfileId: 9, stackLevel: 0, chargingProfilePurpose: "TxDefaultProfile",
            chargingProfileKind: "Absolute", chargingSchedule: {
                chargingRateUnit: "A", chargingSchedulePeriod: [{ startPeriod: 0, limit: 16 }],
            },
        },
    }],
    ["GetCompositeSchedule", { connectorId: 1, duration: 3600 }],
    ["ClearChargingProfile", { id: 9 }],
    ["DataTransfer", { vendorId: "org.example.nobody" }],
    ["ClearCache", {}],
];

let nextTx = 1;
const stopped = new Set();

const server = new RPCServer({ protocols: ["ocpp1.6"], strictMode: true });
server.auth((accept) => accept({}));
server.on("client", (client) => {
    log({ ev: "connect", identity: client.identity });
    client.on("close", () => log({ ev: "close", identity: client.identity }));
    client.on("strictValidationFailure", (e) => log({ ev: "invalid", error: String(e.error && e.error.message || e.error) }));
    const command = async (method, params) => {
        try {
            log({ ev: "command", method, params, result: await client.call(method, params) });
        } catch (e) {
            log({ ev: "command", method, params, error: { code: e.rpcErrorCode || e.name, message: e.message } });
        }
    };
    let booted = false;
    client.handle(({ method, params }) => {
        log({ ev: "call", method, params });
        const now = new Date().toISOString();
        switch (method) {
        case "BootNotification":
            if (!booted) {
                booted = true;
                setTimeout(async () => {
                    for (const [m, p] of COMMANDS) await command(m, p);
                }, 500);
            }
            return { status: "Accepted", interval: 300, currentTime: now };
        case "Heartbeat":
            return { currentTime: now };
        case "Authorize":
            return { idTagInfo: { status: "Accepted" } };
        case "StartTransaction":
            return { transactionId: nextTx++, idTagInfo: { status: "Accepted" } };
        case "StopTransaction":
            return { idTagInfo: { status: "Accepted" } };
        case "MeterValues":
            if (params.transactionId === 1 && !stopped.has(1)) {
                stopped.add(1);
                setTimeout(() => command("RemoteStopTransaction", { transactionId: 1 }), 100);
            }
            return {};
        case "DataTransfer":
            return { status: "Accepted" };
        default:  // StatusNotification, FirmwareStatusNotification, DiagnosticsStatusNotification
            return {};
        }
    });
});

server.listen(0, "127.0.0.1").then((http) => log({ listening: http.address().port }));
process.stdin.resume();
process.stdin.on("end", () => server.close({ force: true }).then(() => process.exit(0)));
