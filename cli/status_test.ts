import assert from "node:assert/strict";
import { format } from "./status.ts";
import type { StatusResult } from "../protocol/status_protocol.ts";

Deno.test(
  "format() prints a holder's token, and says so when a cluster node does not know it",
  { permissions: "none" },
  () => {
    const holder = {
      connectionId: 3,
      peer: "127.0.0.1:5000",
      mode: "exclusive" as const,
      since: "2026-12-01T21:00:00.000Z",
      elapsed: 1.5,
    };
    const result = {
      status: "ok",
      server: {
        version: "0.1.0",
        protocol: 1,
        startedAt: "2026-12-01T20:00:00.000Z",
        uptime: 60,
      },
      connections: { current: 2, total: 2 },
      locks: [
        {
          name: "a",
          mode: "exclusive",
          holders: [{ ...holder, token: 7 }],
          waiters: [],
        },
        { name: "b", mode: "exclusive", holders: [holder], waiters: [] },
      ],
    } as unknown as StatusResult;
    const text = format(result, undefined);
    assert.match(text, /lock "a"[^\n]*\n {2}held by [^\n]*, token 7\n/);
    assert.match(
      text,
      /lock "b"[^\n]*\n {2}held by [^\n]*, token not known on this node/,
    );
  },
);
