/**
 * A counter service on the pklock message layer. `get` and `increment` answer
 * with `{"value": N}`; `watch` does too, and from then on pushes
 * `{"event": "changed", "value": N}` to that connection on every change.
 *
 * Run: `deno run --allow-net examples/counter/server.ts [port]`
 *
 * @module
 */

import {
  type Connection,
  type Message,
  MessageError,
  MessageServer,
} from "../../message/mod.ts";

/**
 * Starts a counter at 0.
 *
 * @param options The port to listen on; 0 (the default) picks a free one.
 * @returns The running server: read `addr.port`, dispose of it to stop.
 */
export function serveCounter(options: { port?: number } = {}): MessageServer {
  let value = 0;
  const watchers = new Set<Connection>();
  return new MessageServer({
    port: options.port ?? 0,
    handlers: {
      get: () => ({ value }),
      increment: (message) => {
        value += step(message);
        for (const watcher of watchers) {
          watcher.send({ event: "changed", value });
        }
        return { value };
      },
      watch: (_message, connection) => {
        watchers.add(connection);
        return { value };
      },
    },
    // A closed connection must not stay a watcher.
    onClose: (connection) => watchers.delete(connection),
  });
}

function step(message: Message): number {
  const by = (message.parameters as { by?: unknown } | undefined)?.by ?? 1;
  if (!Number.isSafeInteger(by)) {
    throw new MessageError("invalid_parameters", '"by" must be an integer');
  }
  return by as number;
}

if (import.meta.main) {
  const server = serveCounter({ port: Number(Deno.args[0] ?? 0) });
  console.log(`Counter listening on port ${server.addr.port}`);
}
