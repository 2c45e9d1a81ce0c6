/**
 * The Deno socket floor: a server that answers the bench's raw pklock frames
 * with canned replies, with no JSON, no lock table and no message layer. Each
 * connection does what any Deno TCP server must do per request, one `read` and
 * one `write`, so its W1 rate is the best a lock server written on Deno's
 * socket API can reach with the same driver. W1 only: it grants every request,
 * so it is no lock server (W2 would see overlaps).
 *
 * Run by bench/main.ts as `deno run -A bench/floor_server.ts`; prints
 * `floor listening on 127.0.0.1:PORT` and serves until SIGTERM.
 *
 * @module
 */

import { writeAll } from "../message/io.ts";
import { encodeFrame } from "../protocol/frame.ts";

/** Replies to the raw client's `lock` (id 1), `release` (id 2), `ping` (id 3). */
const GRANT = encodeFrame({ id: 1, result: { status: "ok", token: 1 } });
const RELEASED = encodeFrame({ id: 2, result: { status: "ok" } });
const PONG = encodeFrame({ id: 3, result: { status: "ok" } });
/**
 * The raw client writes `command` first, so the command's first letter, all
 * the floor needs to choose a reply, sits at a fixed offset in every frame.
 */
const COMMAND_AT = 4 + '{"command":"'.length;
const LOCK = "l".charCodeAt(0);
const RELEASE = "r".charCodeAt(0);

function replyTo(request: Uint8Array, at: number): Uint8Array {
  const letter = request[at + COMMAND_AT];
  return letter === LOCK ? GRANT : letter === RELEASE ? RELEASED : PONG;
}

/** The largest frame the floor takes; the raw client's are about 60 bytes. */
const BUFFER_BYTES = 4096;

async function serve(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(BUFFER_BYTES);
  const view = new DataView(buffer.buffer);
  let filled = 0;
  try {
    conn.setNoDelay(true);
    while (true) {
      const n = await conn.read(
        filled === 0 ? buffer : buffer.subarray(filled),
      );
      if (n === null) return;
      filled += n;
      let at = 0;
      while (filled - at >= 4) {
        const length = view.getUint32(at);
        if (4 + length > BUFFER_BYTES) {
          throw new RangeError(`Frame of ${length} bytes: not a bench request`);
        }
        if (filled - at < 4 + length) break;
        await writeAll(conn, replyTo(buffer, at));
        at += 4 + length;
      }
      buffer.copyWithin(0, at, filled);
      filled -= at;
    }
  } catch (error) {
    // A reset is how the driver hangs up; anything else is worth a line.
    if (!(error instanceof Deno.errors.ConnectionReset)) console.error(error);
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the runtime after a failed read or write.
    }
  }
}

if (import.meta.main) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`floor listening on 127.0.0.1:${listener.addr.port}`);
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  for await (const conn of listener) serve(conn);
}
