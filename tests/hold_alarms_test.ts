// Hold-time alarms: a hold past its threshold is reported to its holder and
// counted, and the lock stays held; alarms are advice, never a lease.
import assert from "node:assert/strict";
import { connect, type HoldAlarmEvent } from "../mod.ts";
import { nextEvent, WAIT_MS } from "./events.ts";
import { deadline, RawClient, startServer } from "./helpers.ts";
import { parseExposition } from "./prometheus.ts";

const ALARMS = { holdTime: 100, rules: [{ pattern: "slow*", holdTime: 50 }] };

Deno.test("a hold past its alarm threshold dispatches an alarm event and the lock stays held", async () => {
  await using server = startServer({ alarms: ALARMS, metrics: {} });
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using other = await connect({ port });
  const slow = await holder.lock("slow-1");
  const slowAlarm = nextEvent<HoldAlarmEvent>(slow, "alarm");
  const plain = await holder.lock("plain");
  const plainAlarm = nextEvent<HoldAlarmEvent>(plain, "alarm");

  const slowDetail = await deadline(slowAlarm, WAIT_MS, "the slow-1 alarm");
  assert.equal(slowDetail.event, "hold_alarm");
  assert.equal(slowDetail.lockName, "slow-1");
  assert.equal(slowDetail.token, slow.token);
  assert.equal(slowDetail.threshold, 50); // the rule's
  assert.ok(slowDetail.heldFor >= 50, `heldFor ${slowDetail.heldFor}`);
  const plainDetail = await deadline(plainAlarm, WAIT_MS, "the plain alarm");
  assert.equal(plainDetail.lockName, "plain");
  assert.equal(plainDetail.token, plain.token);
  assert.equal(plainDetail.threshold, 100); // the default
  assert.ok(plainDetail.heldFor >= 100, `heldFor ${plainDetail.heldFor}`);

  // Advice only: both are still held.
  for (const lock of [slow, plain]) {
    assert.equal(lock.held, true);
    assert.equal(await other.tryLock(lock.name), null, lock.name);
  }
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_hold_alarms_total"), 2);
  await slow.release();
  await plain.release();
});

Deno.test("no alarm is raised for a lock released before its threshold", async () => {
  await using server = startServer({ alarms: ALARMS, metrics: {} });
  await using raw = await RawClient.connect(server.addr.port);
  const lock = (id: number, lockName: string) =>
    raw.request({ command: "lock", parameters: { lockName }, id });
  assert.equal((await lock(1, "slow-brief"))?.id, 1); // threshold 50 ms
  assert.deepEqual(
    await raw.request({
      command: "release",
      parameters: { lockName: "slow-brief" },
      id: 2,
    }),
    { id: 2, result: { status: "ok" } },
  );
  // Taken after the release, with a longer threshold: any alarm for
  // slow-brief would have come before this one.
  const later = await lock(3, "later");
  const alarm = await deadline(raw.next(), WAIT_MS, "the alarm for later");
  assert.equal(alarm?.event, "hold_alarm");
  assert.equal(alarm?.lockName, "later");
  assert.equal(alarm?.token, (later?.result as { token: number }).token);
  assert.equal(alarm?.threshold, 100);
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_hold_alarms_total"), 1);
});
