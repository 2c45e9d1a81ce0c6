import assert from "node:assert/strict";
import { unitOf } from "./systemd_unit.ts";

const pure = { permissions: "none" } as const;

Deno.test(
  "unitOf() finds the service in systemd's own hierarchy, v1 or v2, and tells a user manager's units",
  pure,
  () => {
    const v2 = unitOf("0::/system.slice/backup.service\n");
    assert.deepEqual([v2?.name, v2?.user], ["backup.service", false]);
    const delegated = unitOf("0::/system.slice/ci.service/payload\n");
    assert.equal(delegated?.name, "ci.service");
    const v1 = unitOf(
      "9:name=systemd:/system.slice/cron.service\n4:memory:/other.service\n0::/\n",
    );
    assert.equal(v1?.name, "cron.service", "name=systemd, not another one");
    const user = unitOf(
      "0::/user.slice/user-1000.slice/user@1000.service/app.slice/sync.service\n",
    );
    assert.deepEqual([user?.name, user?.user], ["sync.service", true]);
    const scope = unitOf("0::/user.slice/user-1000.slice/session-4.scope\n");
    assert.deepEqual([scope?.name, scope?.user], ["session-4.scope", false]);
    assert.equal(unitOf("0::/\n"), null);
    assert.equal(unitOf("9:name=systemd:/\n0::/\n"), null);
    assert.equal(
      unitOf("0::/system.slice/odd:name.service\n")?.name,
      "odd:name.service",
    );
    assert.equal(unitOf(""), null);
  },
);
