/**
 * A typed client for the counter service of `server.ts`. Run:
 * `deno run --allow-net examples/counter/client.ts PORT [get|increment N|watch]`
 *
 * @module
 */

import {
  type Message,
  MessageClient,
  type MessageClientOptions,
} from "../../message/mod.ts";

/** A connection to a counter server. */
export class CounterClient implements AsyncDisposable {
  /** The message-layer connection, for its `closed` and `signal`. */
  readonly connection: MessageClient;

  private constructor(connection: MessageClient) {
    this.connection = connection;
  }

  /** Connects to a counter server. */
  static async connect(options: MessageClientOptions): Promise<CounterClient> {
    return new CounterClient(await MessageClient.connect(options));
  }

  /** Returns the current value. */
  get(): Promise<number> {
    return this.#call("get");
  }

  /** Adds `by`, an integer, and returns the new value. */
  increment(by = 1): Promise<number> {
    return this.#call("increment", { by });
  }

  /** Calls `onChange` with every new value; returns the current one. */
  watch(onChange: (value: number) => void): Promise<number> {
    this.connection.addEventListener("message", (event) => {
      const data = (event as MessageEvent<Message>).data;
      if (data.event === "changed") onChange(data.value as number);
    });
    return this.#call("watch");
  }

  /** Closes the connection. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.connection.close();
  }

  async #call(command: string, parameters?: { by: number }): Promise<number> {
    return (await this.connection.rpc<{ value: number }>(command, parameters))
      .value;
  }
}

if (import.meta.main) {
  const [port, command = "get", by = "1"] = Deno.args;
  await using counter = await CounterClient.connect({ port: Number(port) });
  if (command === "increment") console.log(await counter.increment(Number(by)));
  else if (command === "get") console.log(await counter.get());
  else {
    console.log(await counter.watch((value) => console.log(value)));
    await counter.connection.closed; // Until the server stops or ^C.
  }
}
