/**
 * Fencing tokens that strictly increase across restarts: a high-water mark in a
 * state file, reserved ahead in blocks and fsync'd before any token of a block
 * is issued. A restart, however abrupt, resumes above every reservation, so it
 * can never issue a token again. Wall-clock time plays no part.
 *
 * The next block is reserved once half of the current one is issued, so a
 * failed write (a full disk) leaves half a block to serve while it is retried
 * with a bounded backoff; only when every reserved token is issued does
 * {@linkcode TokenStore.next} refuse, and the caller keeps running.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";
import { writeAllSync } from "../message/io.ts";

/** How many tokens one reservation covers. */
export const DEFAULT_TOKEN_BLOCK = 10_000;

/**
 * The largest token ever issued: past `Number.MAX_SAFE_INTEGER`, consecutive
 * integers collapse into one number and tokens would repeat.
 */
export const MAX_TOKEN = Number.MAX_SAFE_INTEGER;

/** The state file cannot be read, parsed or written. */
export class StateFileError extends PklockError {
  /** Always `"StateFileError"`. */
  override name = "StateFileError";
}

/**
 * Every reserved token has been issued and no new block could be reserved
 * yet: the grant must be refused (or wait), never given an unreserved token.
 */
export class TokensUnavailableError extends PklockError {
  /** Always `"TokensUnavailableError"`. */
  override name = "TokensUnavailableError";
  /** The stable code a server refuses the request with. */
  readonly code = "tokens_unavailable";
}

/** Options of {@linkcode TokenStore.open}. */
export interface TokenStoreOptions {
  /**
   * Tokens per reservation.
   *
   * @default {10000}
   */
  block?: number;
  /**
   * The first wait before retrying a failed reservation, in milliseconds;
   * each failure in a row doubles it.
   *
   * @default {100}
   */
  retryMinMs?: number;
  /**
   * The longest wait between two retries, in milliseconds.
   *
   * @default {10000}
   */
  retryMaxMs?: number;
  /**
   * Called when a reservation fails, with the next attempt's delay in
   * milliseconds (`null` when the safe range is used up and none will follow).
   */
  onReserveFailed?: (error: StateFileError, retryInMs: number | null) => void;
  /**
   * Called when a retried reservation succeeds after {@linkcode TokenStore.next}
   * refused: requests refused or kept waiting can be served again.
   */
  onAvailable?: () => void;
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
 * using tokens = TokenStore.open("/var/lib/pklock/state.json");
 * if (tokens.available) console.log(tokens.next());
 * ```
 */
export class TokenStore implements Disposable {
  readonly #path: string;
  readonly #block: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #onReserveFailed: TokenStoreOptions["onReserveFailed"];
  readonly #onAvailable: TokenStoreOptions["onAvailable"];
  #next: number;
  #reserved: number;
  #failure: StateFileError | null = null;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs: number;
  /** Whether `next` refused since the last successful reservation. */
  #refused = false;

  private constructor(
    path: string,
    reserved: number,
    options: TokenStoreOptions,
  ) {
    this.#path = path;
    this.#block = options.block ?? DEFAULT_TOKEN_BLOCK;
    this.#retryMinMs = options.retryMinMs ?? 100;
    this.#retryMaxMs = options.retryMaxMs ?? 10_000;
    this.#retryMs = this.#retryMinMs;
    this.#onReserveFailed = options.onReserveFailed;
    this.#onAvailable = options.onAvailable;
    this.#next = reserved + 1;
    this.#reserved = reserved;
    const error = this.#write(reserved + this.#block);
    if (error !== null) throw error;
  }

  /**
   * Reads the state file (a missing file starts from token 1) and reserves the
   * first block at once, so an unwritable file stops start-up rather than the
   * first grant.
   *
   * @param path The state file.
   * @param options The block size, the retry backoff and the callbacks.
   * @returns The store.
   * @throws {StateFileError} When the file is unreadable, corrupt, so close to
   *   {@linkcode MAX_TOKEN} that a block does not fit, or cannot be written.
   */
  static open(path: string, options: TokenStoreOptions = {}): TokenStore {
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
    const reserved = text === null ? 0 : parseState(text, path);
    const block = options.block ?? DEFAULT_TOKEN_BLOCK;
    if (reserved > MAX_TOKEN - block) {
      throw new StateFileError(
        `State file "${path}" has reserved tokens up to ${reserved}, less than ` +
          `a block of ${block} below the largest safe token ${MAX_TOKEN}: ` +
          "refusing to start, since larger tokens would repeat",
      );
    }
    return new TokenStore(path, reserved, options);
  }

  /** The highest token reserved so far; every issued token is at most this. */
  get reserved(): number {
    return this.#reserved;
  }

  /** Whether {@linkcode TokenStore.next} would issue a token now. */
  get available(): boolean {
    return this.#next <= this.#reserved;
  }

  /**
   * How many tokens can still be issued if no new reservation succeeds:
   * `Infinity` while reservations succeed (each is made, synchronously, with
   * half a block still left).
   */
  get left(): number {
    return this.#failure === null ? Infinity : this.#reserved - this.#next + 1;
  }

  /** Why the last reservation failed, until one succeeds. */
  get failure(): StateFileError | null {
    return this.#failure;
  }

  /**
   * Issues the next token; once half of the current block is issued, reserves
   * the next one (on failure, retried in the background).
   *
   * @returns A token greater than every token issued before, in any run.
   * @throws {TokensUnavailableError} When every reserved token is issued and
   *   no new block could be reserved; nothing changes.
   */
  next(): number {
    if (this.#next > this.#reserved) {
      this.#refused = true;
      // Only a failed reservation lets the block run out: it is the cause.
      throw new TokensUnavailableError(
        `No fencing token available: cannot reserve more in state file "${this.#path}"`,
        { cause: this.#failure },
      );
    }
    const token = this.#next++;
    if (
      this.#retry === undefined && this.#failure === null &&
      this.#reserved - token < this.#block / 2
    ) {
      this.#reserveNext();
    }
    return token;
  }

  /** Stops retrying a failed reservation. */
  [Symbol.dispose](): void {
    clearTimeout(this.#retry);
    this.#retry = undefined;
  }

  #reserveNext(): void {
    this.#retry = undefined;
    if (this.#reserved >= MAX_TOKEN) {
      this.#fail(
        new StateFileError(
          `Fencing tokens in state file "${this.#path}" are used up: ` +
            `${MAX_TOKEN} is the largest safe token`,
        ),
        null,
      );
      return;
    }
    const error = this.#write(
      Math.min(this.#reserved + this.#block, MAX_TOKEN),
    );
    if (error !== null) {
      const retryIn = this.#retryMs;
      this.#retryMs = Math.min(this.#retryMs * 2, this.#retryMaxMs);
      this.#retry = setTimeout(() => this.#reserveNext(), retryIn);
      this.#fail(error, retryIn);
      return;
    }
    this.#failure = null;
    this.#retryMs = this.#retryMinMs;
    if (this.#refused) {
      this.#refused = false;
      this.#onAvailable?.();
    }
  }

  #fail(error: StateFileError, retryIn: number | null): void {
    this.#failure = error;
    this.#onReserveFailed?.(error, retryIn);
  }

  /** Makes `reserved` durable; then, and only then, tokens up to it count. */
  #write(reserved: number): StateFileError | null {
    const state: StateFile = { version: 1, reserved };
    const temporary = `${this.#path}.tmp`;
    try {
      const file = Deno.openSync(temporary, {
        write: true,
        create: true,
        truncate: true,
      });
      try {
        writeAllSync(
          file,
          new TextEncoder().encode(JSON.stringify(state) + "\n"),
        );
        file.syncSync();
      } finally {
        file.close();
      }
      Deno.renameSync(temporary, this.#path);
      syncDirectory(this.#path);
    } catch (error) {
      return new StateFileError(
        `Cannot write state file "${this.#path}": ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#reserved = reserved;
    return null;
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
