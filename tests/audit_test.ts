// The audit log: one JSON line for every grant, release, timeout, refusal,
// withdrawal and forced release, in order.
import assert from "node:assert/strict";
import { connect, LockTimeoutError } from "../mod.ts";
import { AuditLog } from "../server/audit.ts";
import { remote } from "./assertions.ts";
import { lost, WAIT_MS } from "./events.ts";
import {
  ADMIN_SECRET,
  deadline,
  inTempDir,
  RawClient,
  startServer,
} from "./helpers.ts";
import { ask, errorCode } from "./wire.ts";

/** The keys an audit line may have. */
const AUDIT_KEYS = new Set([
  "time",
  "event",
  "lock",
  "mode",
  "token",
  "connectionId",
  "peer",
  "label",
  "code",
  "heldMs",
  "forcedBy",
]);

/** The events that end a hold, whose lines carry its duration. */
const ENDS = new Set(["release", "disconnect_release", "forced_release"]);

Deno.test("the audit log records every grant, release, timeout, refusal and forced release in order", async (t) => {
  await inTempDir(async (dir) => {
    const path = `${dir}/audit.jsonl`;
    const audit = await AuditLog.open(path);
    const ids: Record<string, number> = {};
    const tokens: Record<string, number> = {};
    await t.step(
      "a workload of grants, releases, timeouts, refusals, a withdrawal, a disconnect and a forced release",
      async () => {
        try {
          await using server = startServer({
            audit,
            adminSecret: ADMIN_SECRET,
          });
          const port = server.addr.port;
          await using a = await connect({ port, label: "worker-a" });
          await using b = await connect({ port, label: "worker-b" });
          await using c = await connect({ port });
          await using operator = await connect({ port, label: "operator" });
          ids.a = a.server.connectionId;
          ids.b = b.server.connectionId;
          ids.c = c.server.connectionId;
          ids.operator = operator.server.connectionId;

          const x1 = await a.lock("audit.x");
          tokens.x1 = x1.token;
          const waiting = b.lock("audit.x");
          await b.ping();
          await x1.release();
          const x2 = await waiting;
          tokens.x2 = x2.token;
          await assert.rejects(
            c.lock("audit.x", { mode: "shared", wait: 30 }),
            LockTimeoutError,
          );
          assert.equal(await c.tryLock("audit.x"), null);
          // A second request for a name its connection holds: the client
          // library waits its turn instead, so raw frames ask for it.
          await using raw = await RawClient.connect(port);
          const hello = await ask(raw, {
            command: "hello",
            parameters: { client: "raw" },
            id: 0,
          });
          ids.raw = (hello?.result as { connectionId: number }).connectionId;
          const lockR = {
            command: "lock",
            parameters: { lockName: "audit.r" },
          };
          const granted = await ask(raw, { ...lockR, id: 1 });
          tokens.r = (granted?.result as { token: number }).token;
          assert.equal(
            errorCode(await ask(raw, { ...lockR, id: 2 })),
            "already_held",
          );
          await ask(raw, {
            command: "release",
            parameters: { lockName: "audit.r" },
            id: 3,
          });
          const y = await a.lock("audit.y");
          tokens.y = y.token;
          const controller = new AbortController();
          const blocked = a.lock("audit.x", { signal: controller.signal });
          await a.ping();
          await assert.rejects(b.lock("audit.y"), remote("deadlock"));
          controller.abort(new Error("withdrawn"));
          await assert.rejects(blocked, /withdrawn/);
          const doomed = await connect({ port, label: "doomed" });
          ids.doomed = doomed.server.connectionId;
          tokens.doomed = (await doomed.lock("audit.z")).token;
          const inheriting = a.lock("audit.z");
          await a.ping();
          await doomed.close();
          const z = await deadline(inheriting, WAIT_MS, "audit.z");
          tokens.z = z.token;
          const forced = await operator.forceRelease("audit.x", ADMIN_SECRET);
          assert.equal(forced.status, "ok");
          await deadline(lost(x2), WAIT_MS, "the forced holder's lost signal");
          await y.release();
          await z.release();
          await server.close();
        } finally {
          await audit.close();
        }
      },
    );

    let entries: Record<string, unknown>[] = [];
    await t.step(
      "every line is one JSON object with known keys, in time order",
      async () => {
        const text = await Deno.readTextFile(path);
        assert.ok(text.endsWith("\n"));
        entries = text.slice(0, -1).split("\n").map((line) =>
          JSON.parse(line) as Record<string, unknown>
        );
        let previous = "";
        for (const entry of entries) {
          const line = JSON.stringify(entry);
          for (const key of Object.keys(entry)) {
            assert.ok(AUDIT_KEYS.has(key), `unknown key ${key} in ${line}`);
          }
          const time = entry.time as string;
          assert.equal(new Date(time).toISOString(), time, line);
          assert.ok(time >= previous, `time goes backwards at ${line}`);
          previous = time;
          assert.match(entry.peer as string, /^127\.0\.0\.1:\d+$/, line);
          const heldMs = entry.heldMs;
          if (ENDS.has(entry.event as string)) {
            assert.ok(
              Number.isSafeInteger(heldMs) && heldMs as number >= 0,
              line,
            );
          } else {
            assert.equal(heldMs, undefined, line);
          }
        }
      },
    );
    await t.step("the entries are the workload's events, in order", () => {
      const A = { connectionId: ids.a, label: "worker-a" };
      const B = { connectionId: ids.b, label: "worker-b" };
      const C = { connectionId: ids.c };
      const D = { connectionId: ids.doomed, label: "doomed" };
      const R = { connectionId: ids.raw, label: "raw" };
      const exclusive = { mode: "exclusive" };
      const forcer = (entries.find((entry) => entry.forcedBy) as {
        forcedBy?: { peer?: unknown };
      } | undefined)?.forcedBy?.peer;
      assert.match(String(forcer), /^127\.0\.0\.1:\d+$/);
      assert.deepEqual(
        entries.map(({ time: _, peer: __, heldMs: ___, ...rest }) => rest),
        [
          { event: "grant", lock: "audit.x", token: tokens.x1, ...A },
          { event: "release", lock: "audit.x", token: tokens.x1, ...A },
          { event: "grant", lock: "audit.x", token: tokens.x2, ...B },
          { event: "timeout", lock: "audit.x", ...C, mode: "shared" },
          { event: "refusal", lock: "audit.x", ...C, code: "busy" },
          { event: "grant", lock: "audit.r", token: tokens.r, ...R },
          { event: "refusal", lock: "audit.r", ...R, code: "already_held" },
          { event: "release", lock: "audit.r", token: tokens.r, ...R },
          { event: "grant", lock: "audit.y", token: tokens.y, ...A },
          { event: "refusal", lock: "audit.y", ...B, code: "deadlock" },
          { event: "withdraw", lock: "audit.x", ...A },
          { event: "grant", lock: "audit.z", token: tokens.doomed, ...D },
          {
            event: "disconnect_release",
            lock: "audit.z",
            token: tokens.doomed,
            ...D,
          },
          { event: "grant", lock: "audit.z", token: tokens.z, ...A },
          {
            event: "forced_release",
            lock: "audit.x",
            token: tokens.x2,
            ...B,
            forcedBy: {
              connectionId: ids.operator,
              peer: forcer,
              label: "operator",
            },
          },
          { event: "release", lock: "audit.y", token: tokens.y, ...A },
          { event: "release", lock: "audit.z", token: tokens.z, ...A },
        ].map((entry) => ({ ...exclusive, ...entry })),
      );
    });
  });
});
