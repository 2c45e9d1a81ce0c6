/**
 * Admission: which accepted sockets become connections. The allow-list, the
 * connection limits, and the refusal a peer beyond a limit gets. The total
 * limit never exceeds what the process's open-file limit leaves after the
 * server's own files, so that accepting, refusing and the server's own work
 * (a fencing-token block, the audit log, a metrics scrape) always find a
 * descriptor.
 *
 * @module
 */

import { encodeFrame } from "../protocol/frame.ts";
import { AllowList } from "./allow_list.ts";

/**
 * Descriptors kept for the server itself: the runtime's own (about 25), the
 * listeners, the state file and its replacement, the audit log, metrics
 * scrapes, and the refusals under way.
 */
export const RESERVED_DESCRIPTORS = 64;

/** The default most connections from one address other than loopback. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 1_000;

/** Refusals written at once; past it, a refused peer is closed unanswered. */
const MAX_REFUSALS_IN_FLIGHT = 16;

/**
 * Why a peer was turned away at once: outside the allow-list, or beyond a
 * connection limit.
 */
export type RejectReason =
  | "not_allowed"
  | "too_many_connections"
  | "too_many_connections_per_ip";

/**
 * The process's open-file limit (the soft limit, which Deno raises to the
 * hard one at start), read from `/proc/self/limits`.
 *
 * @returns The limit, or `undefined` where it cannot be read (not Linux, no
 *   read permission) or is unlimited.
 */
export function openFileLimit(): number | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    return undefined;
  }
  const soft = /^Max open files\s+(\d+)/m.exec(text)?.[1];
  return soft === undefined ? undefined : Number(soft);
}

/**
 * The connection limit a server applies: what was asked, but never more than
 * the open-file limit leaves after {@linkcode RESERVED_DESCRIPTORS}.
 *
 * @param asked The `maxConnections` setting, if any.
 * @param files The open-file limit, if known ({@linkcode openFileLimit}).
 * @returns The limit.
 */
export function connectionLimit(
  asked: number | undefined,
  files: number | undefined,
): number {
  const room = files === undefined
    ? Infinity
    : Math.max(1, files - RESERVED_DESCRIPTORS);
  return Math.min(asked ?? Infinity, room);
}

/**
 * Whether an address is the host's own (127.0.0.0/8, `::1`, or IPv4-mapped
 * loopback).
 *
 * @param ip The peer's address.
 * @returns `true` for loopback.
 */
export function isLoopback(ip: string): boolean {
  return ip === "::1" || ip.startsWith("127.") || ip.startsWith("::ffff:127.");
}

/** What {@linkcode Admission} is configured with. */
export interface AdmissionSettings {
  /** Allowed addresses and ranges. */
  allowed: readonly string[];
  /** The most connections at once (already within the open-file limit). */
  maxConnections: number;
  /** The most from one address; unset: 1,000 for addresses not loopback. */
  maxConnectionsPerIp: number | undefined;
  /** Under TLS, a refusal cannot be written before a handshake. */
  tls: boolean;
  /** Called for each peer turned away. */
  onReject: ((addr: Deno.NetAddr, reason: RejectReason) => void) | undefined;
}

/** Decides, for each accepted socket, whether it becomes a connection. */
export class Admission {
  readonly #settings: AdmissionSettings;
  readonly #allowList: AllowList;
  readonly #perIp = new Map<string, number>();
  readonly #refusing = new Set<Promise<void>>();
  #open = 0;

  /**
   * @param settings The allow-list, the limits, and the rejection hook.
   * @throws {TypeError} When an allow-list entry is invalid.
   */
  constructor(settings: AdmissionSettings) {
    this.#settings = settings;
    this.#allowList = new AllowList(settings.allowed);
  }

  /** Resolves once every refusal under way is written (or failed). */
  get refusing(): Promise<void> {
    return Promise.all(this.#refusing).then(() => {});
  }

  /**
   * Admits a socket, counting it, or turns it away and closes it.
   *
   * @param conn A socket just accepted.
   * @returns Whether it was admitted.
   */
  admit(conn: Deno.Conn): boolean {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const ip = remote.hostname;
    const settings = this.#settings;
    if (!this.#allowList.allows(ip)) {
      conn.close();
      settings.onReject?.(remote, "not_allowed");
      return false;
    }
    if (this.#open >= settings.maxConnections) {
      this.#refuse(conn, "too_many_connections", settings.maxConnections, "");
      return false;
    }
    const perIp = settings.maxConnectionsPerIp ??
      (isLoopback(ip) ? Infinity : DEFAULT_MAX_CONNECTIONS_PER_IP);
    const fromIp = this.#perIp.get(ip) ?? 0;
    if (fromIp >= perIp) {
      this.#refuse(conn, "too_many_connections_per_ip", perIp, ` from ${ip}`);
      return false;
    }
    this.#perIp.set(ip, fromIp + 1);
    this.#open++;
    return true;
  }

  /**
   * An admitted connection is gone.
   *
   * @param addr Its peer's address.
   */
  left(addr: Deno.NetAddr): void {
    this.#open--;
    const fromIp = this.#perIp.get(addr.hostname)! - 1;
    if (fromIp === 0) this.#perIp.delete(addr.hostname);
    else this.#perIp.set(addr.hostname, fromIp);
  }

  /** Tells a peer beyond a connection limit why, then disconnects it. */
  #refuse(
    conn: Deno.Conn,
    reason: "too_many_connections" | "too_many_connections_per_ip",
    limit: number,
    where: string,
  ): void {
    this.#settings.onReject?.(conn.remoteAddr as Deno.NetAddr, reason);
    // Under TLS the write would wait for a handshake a silent peer never
    // does; and a flood of refusals must not hold descriptors: close at once.
    if (this.#settings.tls || this.#refusing.size >= MAX_REFUSALS_IN_FLIGHT) {
      conn.close();
      return;
    }
    const frame = encodeFrame({
      error: {
        code: "too_many_connections",
        message: `Too many connections${where}: the limit is ${limit}`,
      },
    });
    const refusing: Promise<void> = conn.write(frame).then(
      () => {},
      () => {},
    ).finally(() => {
      conn.close();
      this.#refusing.delete(refusing);
    });
    this.#refusing.add(refusing);
  }
}
