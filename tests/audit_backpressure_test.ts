// The audit log never costs the server its memory: a real `pklock serve`
// whose audit file is a FIFO that nobody reads keeps serving locks within a
// bounded heap, counts the entries it drops, and writes how many into the
// file once it is read again.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { deadline, inTempDir, settingsFile, spawnServer } from "./helpers.ts";
import { scrape } from "./prometheus.ts";

/** Long names make big entries: the 4 MiB queue fills in some 5,000 cycles. */
const NAME = "audit.".padEnd(250, "x");

/** The resident memory of a process, in bytes, from /proc. */
async function rss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = status.match(/^VmRSS:\s+(\d+) kB$/m);
  assert.ok(kib, status);
  return Number(kib[1]) * 1024;
}

/** `cycles` lock and release cycles, spread over four connections. */
async function churn(port: number, cycles: number): Promise<void> {
  await Promise.all([0, 1, 2, 3].map(async (i) => {
    await using client = await connect({ port });
    for (let n = i; n < cycles; n += 4) {
      await (await client.lock(`${NAME}${i}`)).release();
    }
  }));
}

/** Reads the FIFO until a `dropped` line; returns its count. */
async function readUntilDropped(fifo: Deno.FsFile): Promise<number> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(65_536);
  let tail = "";
  while (true) {
    const n = await fifo.read(buffer);
    assert.ok(n !== null, "The FIFO ended before a dropped line");
    const lines = (tail + decoder.decode(buffer.subarray(0, n))).split("\n");
    tail = lines.pop()!;
    for (const line of lines) {
      const entry = JSON.parse(line);
      if (entry.event === "dropped") return entry.count;
    }
  }
}

Deno.test("an audit file that takes no bytes costs entries, not memory, and locks keep being served", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/audit.fifo`;
    const made = await new Deno.Command("mkfifo", { args: [path] }).output();
    assert.ok(made.success, new TextDecoder().decode(made.stderr));
    // Read and write: the open does not wait for a writer, and this end is
    // the reader that never reads.
    using fifo = await Deno.open(path, { read: true, write: true });
    const config = await settingsFile(dir, {
      audit: { file: path },
      metrics: { host: "127.0.0.1", port: 0 },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const metricsPort = Number(
      (await server.waitFor(/metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1],
    );

    // The pipe (64 KiB) and the queue (4 MiB) fill up first.
    await deadline(churn(port, 10_000), 60_000, "10,000 cycles");
    const before = await rss(server.pid);
    // Unbounded, these 20,000 cycles grew it by some 48 MB (3.8 MB bounded).
    await deadline(churn(port, 20_000), 120_000, "20,000 more cycles");
    const grown = await rss(server.pid) - before;
    assert.ok(grown < 16 * 1_048_576, `RSS grew by ${grown} bytes`);

    await using client = await connect({ port });
    assert.notEqual(await client.tryLock("audit.still-served"), null);
    const dropped = (await scrape(metricsPort)).value(
      "pklock_audit_dropped_total",
    ) ?? 0;
    assert.ok(dropped > 40_000, `${dropped} entries dropped`);
    assert.match(
      await server.waitFor(
        /\[ERR\] pklock·audit: The audit log dropped \d+ entries[^\n]*\n/,
        "stderr",
      ).then((match) => match[0]),
      /the file takes no more bytes/,
    );

    const recorded = await deadline(
      readUntilDropped(fifo),
      30_000,
      "the dropped line in the audit file",
    );
    assert.ok(recorded >= dropped, `${recorded} < ${dropped}`);
  });
});

Deno.test("a server whose audit file takes no bytes still exits 0 on SIGTERM", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/audit.fifo`;
    const made = await new Deno.Command("mkfifo", { args: [path] }).output();
    assert.ok(made.success, new TextDecoder().decode(made.stderr));
    using _fifo = await Deno.open(path, { read: true, write: true });
    const config = await settingsFile(dir, { audit: { file: path } });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    // Some 800 KB of entries: the 64 KiB pipe is full, a write is stuck.
    await deadline(churn(port, 1_000), 60_000, "1,000 cycles");
    server.kill("SIGTERM");
    const result = await deadline(
      server.result(),
      10_000,
      "the server to exit",
    );
    assert.equal(result.code, 0, result.stderr);
  });
});
