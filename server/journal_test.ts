import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import type { Connection } from "../message/connection.ts";
import { Journal, type Timing } from "./journal.ts";
import type { LockRequest } from "./lock_space.ts";
import { Session } from "./session.ts";

/** Runs `fn` with pklock's logs at `info` and above captured. */
async function captured(fn: () => void): Promise<LogRecord[]> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { capture: (record: LogRecord) => records.push(record) },
    loggers: [
      { category: ["pklock"], lowestLevel: "info", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
    ],
  });
  try {
    fn();
  } finally {
    await reset();
  }
  return records;
}

function session(label?: string): Session {
  const connection = {
    id: 7,
    remoteAddr: { transport: "tcp", hostname: "::1", port: 4000 },
  } as unknown as Connection;
  const session = new Session(connection, true);
  if (label !== undefined) session.label = label;
  return session;
}

function hold(owner: Session, name: string): LockRequest<Session, Timing> {
  return {
    owner,
    name,
    mode: "exclusive",
    ticket: { asked: 0, granted: Date.now() },
    held: true,
    token: 1,
  };
}

Deno.test({
  name:
    "a connection whose end released many locks gets one log line: the count and the first ten names",
  permissions: "none",
  async fn() {
    const journal = new Journal({});
    const holder = session("worker");
    const records = await captured(() => {
      for (let i = 0; i < 12; i++) {
        journal.released(hold(holder, `lock-${i}`), "disconnect");
      }
      holder.end("peer_closed");
      journal.closed(holder, { reason: "peer_closed" });
    });
    assert.equal(records.length, 1);
    const [record] = records;
    assert.equal(record!.level, "info");
    assert.equal(record!.properties.count, 12);
    assert.deepEqual(
      record!.properties.names,
      Array.from({ length: 10 }, (_, i) => `lock-${i}`),
    );
    assert.equal(record!.properties.peer, "[::1]:4000");
    assert.equal(record!.properties.label, "worker");
    assert.match(
      String(record!.rawMessage),
      /^Released \{count\} lock\(s\) held by connection \{id\} .*: connection closed \(\{reason\}\): \{names\}$/,
    );
  },
});

Deno.test({
  name:
    "a forced release says so in its line, and a connection that released nothing logs nothing at info",
  permissions: "none",
  async fn() {
    const journal = new Journal({});
    const forced = session();
    const idle = session();
    const records = await captured(() => {
      journal.released(hold(forced, "stuck"), "force");
      journal.closed(forced, { reason: "forced_release" });
      journal.closed(idle, { reason: "peer_closed" });
      journal.released(hold(idle, "mine"), "client");
    });
    assert.equal(records.length, 1);
    assert.match(
      String(records[0]!.rawMessage),
      /: forced release: \{names\}$/,
    );
    assert.deepEqual(records[0]!.properties.names, ["stuck"]);
    assert.equal(records[0]!.properties.label, "no label");
  },
});
