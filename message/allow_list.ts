/**
 * IP allow-lists: single addresses or CIDR ranges, IPv4 and IPv6. Pure: no I/O.
 *
 * @module
 */

/** The loopback addresses, the default allow-list. */
export const LOOPBACK: readonly string[] = ["127.0.0.1", "::1"];

interface Range {
  bytes: Uint8Array;
  prefix: number;
}

/**
 * A compiled allow-list. IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) match the
 * IPv4 entries.
 *
 * @example Matching peers
 * ```ts
 * import { AllowList } from "./allow_list.ts";
 * const allowed = new AllowList(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
 * console.assert(allowed.allows("10.1.2.3"));
 * console.assert(!allowed.allows("192.168.0.1"));
 * ```
 */
export class AllowList {
  readonly #ranges: Range[];

  /**
   * Compiles the entries once, so that each check is a few byte compares.

   *
   * @param entries Addresses (`10.0.0.1`, `::1`) or ranges (`10.0.0.0/8`).
   * @throws {TypeError} When an entry is not an address or range.
   */
  constructor(entries: readonly string[]) {
    this.#ranges = entries.map(parseRange);
  }

  /**
   * Whether a peer may connect.
   *
   * @param address The peer's IP address as text.
   * @returns `true` when some entry covers it.
   */
  allows(address: string): boolean {
    const bytes = parseAddress(address);
    if (bytes === null) return false;
    return this.#ranges.some((range) => covers(range, bytes));
  }
}

/**
 * Explains why an allow-list entry is invalid.
 *
 * @param entry An address or CIDR range.
 * @returns `null` when the entry is valid, else the reason.
 */
export function checkAllowEntry(entry: string): string | null {
  try {
    parseRange(entry);
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

function parseRange(entry: string): Range {
  const slash = entry.indexOf("/");
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const bytes = parseAddress(address);
  if (bytes === null) {
    throw new TypeError(`"${entry}" is not an IP address or CIDR range`);
  }
  // An IPv4-mapped entry (`::ffff:10.0.0.0/104`) counts its prefix over all
  // 128 bits, the last 32 of which are the IPv4 address it is kept as.
  const skip = bytes.length === 4 && address.includes(":") ? 96 : 0;
  const bits = skip + bytes.length * 8;
  if (slash === -1) return { bytes, prefix: bits - skip };
  const text = entry.slice(slash + 1);
  const prefix = Number(text);
  if (!/^\d{1,3}$/.test(text) || prefix < skip || prefix > bits) {
    throw new TypeError(
      `"${entry}" has an invalid prefix length: expected ${skip} to ${bits}`,
    );
  }
  return { bytes, prefix: prefix - skip };
}

function covers(range: Range, address: Uint8Array): boolean {
  if (range.bytes.length !== address.length) return false;
  const whole = range.prefix >>> 3;
  for (let i = 0; i < whole; i++) {
    if (range.bytes[i] !== address[i]) return false;
  }
  const rest = range.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (range.bytes[whole]! & mask) === (address[whole]! & mask);
}

/**
 * Parses an IPv4 or IPv6 address into 4 or 16 bytes; IPv4-mapped IPv6
 * addresses become their 4 IPv4 bytes.
 */
function parseAddress(text: string): Uint8Array | null {
  if (text.includes(":")) {
    const bytes = parseIpv6(text);
    if (bytes === null) return null;
    const mapped = bytes.subarray(0, 10).every((b) => b === 0) &&
      bytes[10] === 0xff && bytes[11] === 0xff;
    return mapped ? bytes.slice(12) : bytes;
  }
  return parseIpv4(text);
}

function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return null;
    bytes[i] = Number(part);
  }
  return bytes;
}

function parseIpv6(text: string): Uint8Array | null {
  const zone = text.indexOf("%");
  if (zone !== -1) {
    // A zone id (an interface's name or number) is ignored, but it must be one.
    if (!/^[\w.-]+$/.test(text.slice(zone + 1))) return null;
    text = text.slice(0, zone);
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 2 && halves[1] !== ""
    ? halves[1]!.split(":")
    : [];
  const groups: number[] = [];
  const all = [...head, ...tail];
  const last = all.at(-1);
  let ipv4: Uint8Array | null = null;
  if (last !== undefined && last.includes(".")) {
    ipv4 = parseIpv4(last);
    if (ipv4 === null) return null;
    if (tail.length > 0) tail.pop();
    else if (halves.length === 1) head.pop();
    // Only the end of an address may be dotted: `1.2.3.4::` is not one.
    else return null;
  }
  const explicit = head.length + tail.length + (ipv4 ? 2 : 0);
  if (halves.length === 1 ? explicit !== 8 : explicit > 7) return null;
  for (const group of head) groups.push(parseGroup(group));
  for (let i = explicit; i < 8; i++) groups.push(0);
  for (const group of tail) groups.push(parseGroup(group));
  if (groups.some(Number.isNaN)) return null;
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[i * 2] = group >>> 8;
    bytes[i * 2 + 1] = group & 0xff;
  });
  if (ipv4) bytes.set(ipv4, 12);
  return bytes;
}

function parseGroup(group: string): number {
  return /^[0-9a-fA-F]{1,4}$/.test(group) ? parseInt(group, 16) : NaN;
}
