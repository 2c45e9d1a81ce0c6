import assert from "node:assert/strict";
import type { EtcdLockSpace } from "./lock_space.ts";
import { LockMirror } from "./lock_mirror.ts";
import { NodeRequest, NodeRequests, wholeState } from "./node_requests.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { requestKey } from "./request_keys.ts";
import type { Session } from "../server/session.ts";
import type { Ticket } from "../server/outcomes.ts";

const ROOT = "/pklock/v1";

Deno.test(
  "status counts holders by the grant rule: this node's own once told, with the token told; another node's with no token while none is known",
  { permissions: "none" },
  () => {
    const mirror = new LockMirror(ROOT);
    const kv = (node: string, name: string) => ({
      key: requestKey(ROOT, { name, mode: "exclusive", node, seat: 0 }),
      value: JSON.stringify({ conn: 7, since: 1_000 }),
      createRevision: 5,
      modRevision: 5,
      lease: "1",
    });
    // Listed after their grants, which no write recorded.
    const mine = kv("a1", "r");
    const theirs = kv("b2", "s");
    mirror.reset([mine, theirs], 9);
    const space = {
      mirror,
      node: "a1",
      ended: () => false,
      tokenOf: (m: { grant?: { revision: number } }) =>
        m.grant?.revision ? 1 : 0,
    } as unknown as EtcdLockSpace;
    const session = { id: 7, peer: "p" } as unknown as Session;
    const ticket = {
      name: "r",
      mode: "exclusive",
      asked: 1_000,
      granted: 0,
    } as unknown as Ticket;
    const requests = new NodeRequests();
    const request = new NodeRequest(session, ticket);
    requests.add(request);
    request.state = "waiting";
    request.cluster = { key: mine.key, createRevision: 5 } as ClusterRequest;
    // Being marked: it holds by the rule, its client not told yet.
    let state = wholeState(space, requests, "r")!;
    assert.deepEqual([state.holders.length, state.waiters.length], [0, 1]);
    request.state = "held";
    request.token = 1_234;
    state = wholeState(space, requests, "r")!;
    assert.deepEqual([state.holders.length, state.waiters.length], [1, 0]);
    assert.equal(state.holders[0]!.token, 1_234, "the token it was told");
    const other = wholeState(space, requests, "s")!;
    assert.equal(other.holders.length, 1, "another node's, by the rule");
    assert.equal(other.holders[0]!.token, 0, "no token known here");
    assert.equal(other.holders[0]!.ticket.granted, 1_000, "since it asked");
  },
);
