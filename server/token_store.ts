/**
 * Fencing tokens that strictly increase across restarts: a high-water mark in a
 * state file, reserved ahead in blocks and fsync'd before any token of a block
 * is issued. A restart, however abrupt, resumes above every reservation, so it
 * can never issue a token again. Wall-clock time plays no part.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";

/** How many tokens one reservation covers. */
export const DEFAULT_TOKEN_BLOCK = 10_000;

/** The state file cannot be read, parsed or written. */
export class StateFileError extends PklockError {
  /** Always `"StateFileError"`. */
  override name = "StateFileError";
}

interface StateFile {
  version: 1;
  /** Every token up to this one may have been issued. */
  reserved: number;
}

/**
 * Issues fencing tokens from blocks reserved in a state file.
 *
 * @example Issuing tokens
 * ```ts ignore
 * const tokens = TokenStore.open("/var/lib/pklock/state.json");
 * const token = tokens.next();
 * ```
 */
export class TokenStore {
  readonly #path: string;
  readonly #block: number;
  #next: number;
  #reserved: number;

  private constructor(path: string, reserved: number, block: number) {
    this.#path = path;
    this.#block = block;
    this.#next = reserved + 1;
    this.#reserved = reserved;
    this.#reserve();
  }

  /**
   * Reads the state file (a missing file starts from token 1) and reserves the
   * first block at once, so an unwritable file stops start-up rather than the
   * first grant.
   *
   * @param path The state file.
   * @param block Tokens per reservation.
   * @returns The store.
   * @throws {StateFileError} When the file is unreadable, corrupt or cannot be
   *   written.
   */
  static open(path: string, block: number = DEFAULT_TOKEN_BLOCK): TokenStore {
    let text: string | null = null;
    try {
      text = Deno.readTextFileSync(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new StateFileError(
          `Cannot read state file "${path}": ${(error as Error).message}`,
          { cause: error },
        );
      }
    }
    return new TokenStore(
      path,
      text === null ? 0 : parseState(text, path),
      block,
    );
  }

  /** The highest token reserved so far; every issued token is at most this. */
  get reserved(): number {
    return this.#reserved;
  }

  /**
   * Issues the next token, reserving a new block first when this one is used
   * up.
   *
   * @returns A token greater than every token issued before, in any run.
   * @throws {StateFileError} When a new block cannot be reserved.
   */
  next(): number {
    if (this.#next > this.#reserved) this.#reserve();
    return this.#next++;
  }

  #reserve(): void {
    const reserved = this.#reserved + this.#block;
    const state: StateFile = { version: 1, reserved };
    const temporary = `${this.#path}.tmp`;
    try {
      const file = Deno.openSync(temporary, {
        write: true,
        create: true,
        truncate: true,
      });
      try {
        const bytes = new TextEncoder().encode(JSON.stringify(state) + "\n");
        let written = 0;
        while (written < bytes.length) {
          written += file.writeSync(bytes.subarray(written));
        }
        file.syncSync();
      } finally {
        file.close();
      }
      Deno.renameSync(temporary, this.#path);
      syncDirectory(this.#path);
    } catch (error) {
      throw new StateFileError(
        `Cannot write state file "${this.#path}": ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#reserved = reserved;
  }
}

function parseState(text: string, path: string): number {
  let state: Partial<StateFile> | null = null;
  try {
    state = JSON.parse(text);
  } catch {
    // Reported below.
  }
  const reserved = state?.reserved;
  if (
    state?.version !== 1 || typeof reserved !== "number" ||
    !Number.isSafeInteger(reserved) || reserved < 0
  ) {
    throw new StateFileError(
      `State file "${path}" is corrupt: expected {"version":1,"reserved":N}; ` +
        "refusing to start, since tokens issued before could be issued again",
    );
  }
  return reserved;
}

/** Makes a rename durable: fsync the folder holding the file, where possible. */
function syncDirectory(path: string): void {
  const slash = path.lastIndexOf("/");
  const directory = slash === -1 ? "." : path.slice(0, slash) || "/";
  let handle: Deno.FsFile | undefined;
  try {
    handle = Deno.openSync(directory, { read: true });
    handle.syncSync();
  } catch {
    // Some systems cannot open or fsync a folder; the file itself is synced.
  } finally {
    handle?.close();
  }
}
