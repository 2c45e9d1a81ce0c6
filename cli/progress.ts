/**
 * What a waiting command shows on a terminal: the lock it waits for and its
 * place in the queue, rewritten in place as the queue moves. Off the terminal
 * it shows nothing.
 *
 * @module
 */

const encoder = new TextEncoder();

/** A status line on standard error, shown only on a terminal. */
export class WaitProgress {
  readonly #name: string;
  readonly #shown: boolean;
  #drawn = false;

  /**
   * @param name The lock waited for.
   * @param shown Whether to draw at all.
   */
  constructor(name: string, shown: boolean = Deno.stderr.isTerminal()) {
    this.#name = name;
    this.#shown = shown;
  }

  /** Draws the current place; pass it as `onPosition`, or `undefined` when not shown. */
  get onPosition(): ((position: number) => void) | undefined {
    if (!this.#shown) return undefined;
    return (position) => {
      const ahead = position === 1 ? "next in line" : `${position - 1} ahead`;
      this.#write(`\r\x1b[2KWaiting for lock "${this.#name}": ${ahead}`);
      this.#drawn = true;
    };
  }

  /** Erases the line once the wait is over. */
  done(): void {
    if (this.#drawn) this.#write("\r\x1b[2K");
    this.#drawn = false;
  }

  #write(text: string): void {
    Deno.stderr.writeSync(encoder.encode(text));
  }
}
