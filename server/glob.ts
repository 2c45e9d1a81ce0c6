/**
 * Lock-name patterns for settings: `*` matches any run of characters, `?` any
 * one character, everything else itself.
 *
 * @module
 */

/**
 * Compiles a pattern such as `jobs.*` or `report-????`.
 *
 * @param pattern The pattern.
 * @returns A regular expression matching whole names.
 */
export function globToRegExp(pattern: string): RegExp {
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replaceAll("*", ".*")
    .replaceAll("?", ".");
  return new RegExp(`^${source}$`, "s");
}

/**
 * Whether any pattern matches a name.
 *
 * @param patterns Compiled patterns.
 * @param name A lock name.
 * @returns `true` when one matches.
 */
export function matchesAny(patterns: readonly RegExp[], name: string): boolean {
  for (const pattern of patterns) if (pattern.test(name)) return true;
  return false;
}

/**
 * Compiles a pattern into a matcher that takes time linear in the name for
 * each of the pattern's parts, whatever the pattern: patterns that clients
 * send (`status`) must not be able to make the server backtrack. Matches
 * exactly what {@linkcode globToRegExp} matches.
 *
 * @param pattern The pattern.
 * @returns Whether a whole name matches it.
 */
export function globMatcher(pattern: string): (name: string) => boolean {
  const parts = pattern.split("*");
  const first = parts[0]!;
  if (parts.length === 1) {
    return (name) => name.length === first.length && partAt(first, name, 0);
  }
  const last = parts.at(-1)!;
  const middle = parts.slice(1, -1).filter((part) => part.length > 0);
  return (name) => {
    const end = name.length - last.length;
    if (end < first.length) return false;
    if (!partAt(first, name, 0) || !partAt(last, name, end)) return false;
    let at = first.length;
    // The leftmost place of each part leaves the most room for the rest.
    for (const part of middle) {
      const found = find(part, name, at, end - part.length);
      if (found < 0) return false;
      at = found + part.length;
    }
    return true;
  };
}

/** The first place from `from` to `to` where `part` matches, or -1. */
function find(part: string, name: string, from: number, to: number): number {
  if (!part.includes("?")) {
    const found = name.indexOf(part, from);
    return found > to ? -1 : found;
  }
  for (let at = from; at <= to; at++) if (partAt(part, name, at)) return at;
  return -1;
}

/** Whether `part` (with `?` for any one unit) matches `name` at `at`. */
function partAt(part: string, name: string, at: number): boolean {
  for (let i = 0; i < part.length; i++) {
    const c = part.charCodeAt(i);
    if (c !== 63 && c !== name.charCodeAt(at + i)) return false;
  }
  return true;
}
