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
