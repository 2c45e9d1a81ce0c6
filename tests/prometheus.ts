/**
 * A checker of the Prometheus text exposition format (version 0.0.4): parses
 * `/metrics` text, asserts every rule of the format, and answers the value of
 * a series.
 *
 * @module
 */

import assert from "node:assert/strict";

/** One sample line. */
export interface Sample {
  /** The sample's metric name (`x_bucket` for a bucket of histogram `x`). */
  name: string;
  /** Its labels, unescaped. */
  labels: Record<string, string>;
  /** Its value. */
  value: number;
}

/** A metric family: its HELP and TYPE lines and the samples that follow. */
export interface Family {
  /** The family's name. */
  name: string;
  /** Its HELP text, still escaped. */
  help: string;
  /** Its TYPE: counter, gauge, histogram, summary or untyped. */
  type: string;
  /** Its samples, in order. */
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
/** What Go's strconv.ParseFloat, which Prometheus uses, accepts. */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const SPECIAL = /^([+-]?)(inf|infinity|nan)$/i;

/** A parsed and checked exposition. */
export class Exposition {
  /** The families by name, in the order of the text. */
  readonly families: ReadonlyMap<string, Family>;

  /**
   * Wraps parsed families.
   *
   * @param families The families by name, in the order of the text.
   */
  constructor(families: ReadonlyMap<string, Family>) {
    this.families = families;
  }

  /**
   * Every sample named `name`.
   *
   * @param name A sample name.
   * @returns The samples, in the order of the text.
   */
  series(name: string): Sample[] {
    return [...this.families.values()].flatMap((family) =>
      family.samples.filter((sample) => sample.name === name)
    );
  }

  /**
   * The value of the sample with exactly these labels.
   *
   * @param name A sample name.
   * @param labels All of its labels.
   * @returns The value, or `undefined` when there is no such sample.
   */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const wanted = seriesKey(name, labels);
    return this.series(name).find((sample) =>
      seriesKey(sample.name, sample.labels) === wanted
    )?.value;
  }
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const sorted = Object.entries(labels).sort(([a], [b]) => a < b ? -1 : 1);
  return `${name}${JSON.stringify(sorted)}`;
}

function parseValue(text: string, where: string): number {
  const special = text.match(SPECIAL);
  if (special) {
    const [, sign, word] = special;
    if (word!.toLowerCase() === "nan") return NaN;
    return sign === "-" ? -Infinity : Infinity;
  }
  assert.match(text, DECIMAL, `${where}: "${text}" is not a number`);
  return Number(text);
}

/** Whether a sample name belongs to a family of this type. */
function belongs(sample: string, family: Family): boolean {
  const { name, type } = family;
  if (type === "histogram") {
    return [`${name}_bucket`, `${name}_sum`, `${name}_count`].includes(sample);
  }
  if (type === "summary") {
    return [name, `${name}_sum`, `${name}_count`].includes(sample);
  }
  return sample === name;
}

/** Parses `name{label="value",...} value [timestamp]`. */
function parseSample(line: string, where: string): Sample {
  const name = line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)?.[0];
  assert.ok(name, `${where}: no valid metric name`);
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    while (line[at] !== "}") {
      const label = line.slice(at).match(LABEL_NAME)?.[0];
      assert.ok(label, `${where}: invalid label name at column ${at + 1}`);
      assert.ok(!(label in labels), `${where}: label "${label}" repeated`);
      at += label.length;
      assert.equal(line.slice(at, at + 2), '="', `${where}: expected ="`);
      at += 2;
      let value = "";
      while (true) {
        const char = line[at];
        assert.ok(char !== undefined, `${where}: unterminated label value`);
        if (char === '"') break;
        if (char === "\\") {
          const escaped = line[at + 1];
          const decoded = escaped === "\\"
            ? "\\"
            : escaped === '"'
            ? '"'
            : escaped === "n"
            ? "\n"
            : undefined;
          assert.ok(
            decoded !== undefined,
            `${where}: invalid escape \\${escaped}`,
          );
          value += decoded;
          at += 2;
        } else {
          value += char;
          at++;
        }
      }
      at++;
      labels[label] = value;
      if (line[at] === ",") at++;
      else assert.equal(line[at], "}", `${where}: expected , or }`);
    }
    at++;
  }
  assert.equal(line[at], " ", `${where}: expected a space before the value`);
  const fields = line.slice(at + 1).split(" ");
  assert.ok(
    fields.length === 1 || (fields.length === 2 && /^-?\d+$/.test(fields[1]!)),
    `${where}: expected a value and at most a timestamp`,
  );
  return { name, labels, value: parseValue(fields[0]!, where) };
}

/** Checks the buckets, sum and count of every series of a histogram. */
function checkHistogram(family: Family): void {
  const groups = new Map<string, { le: number; count: number }[]>();
  const strip = (labels: Record<string, string>) => {
    const { le: _, ...rest } = labels;
    return seriesKey(family.name, rest);
  };
  for (const sample of family.samples) {
    if (sample.name !== `${family.name}_bucket`) continue;
    const le = sample.labels.le;
    assert.ok(le !== undefined, `${family.name}_bucket without an "le" label`);
    const key = strip(sample.labels);
    const buckets = groups.get(key) ?? [];
    buckets.push({
      le: parseValue(le, `${family.name} le`),
      count: sample.value,
    });
    groups.set(key, buckets);
  }
  assert.ok(groups.size > 0, `histogram ${family.name} has no buckets`);
  for (const [key, buckets] of groups) {
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(
        buckets[i]!.le > buckets[i - 1]!.le,
        `${key}: le not increasing`,
      );
      assert.ok(
        buckets[i]!.count >= buckets[i - 1]!.count,
        `${key}: bucket counts are not cumulative`,
      );
    }
    const last = buckets.at(-1)!;
    assert.equal(last.le, Infinity, `${key}: no le="+Inf" bucket`);
    const others = family.samples.filter((sample) =>
      strip(sample.labels) === key
    );
    const count = others.find((s) => s.name === `${family.name}_count`);
    const sum = others.find((s) => s.name === `${family.name}_sum`);
    assert.ok(count, `${key}: no _count`);
    assert.ok(sum, `${key}: no _sum`);
    assert.equal(
      last.count,
      count.value,
      `${key}: +Inf bucket differs from _count`,
    );
  }
}

/**
 * Parses the text format and checks its rules: HELP and TYPE before each
 * family's samples, one group per family, valid names, quoted and escaped
 * label values, numeric values, counters ending in `_total`, cumulative
 * histogram buckets whose `+Inf` bucket equals `_count`.
 *
 * @param text The exposition.
 * @returns The parsed exposition.
 * @throws {assert.AssertionError} When the text breaks a rule.
 */
export function parseExposition(text: string): Exposition {
  assert.ok(
    text.endsWith("\n"),
    "the exposition does not end with a line feed",
  );
  const families = new Map<string, Family>();
  const helps = new Map<string, string>();
  const series = new Set<string>();
  let current: Family | undefined;
  text.slice(0, -1).split("\n").forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line)})`;
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const match = line.match(/^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t](.*))?$/);
      if (match === null) return; // a plain comment
      const [, keyword, name, rest = ""] = match as unknown as string[];
      assert.match(name!, METRIC_NAME, `${where}: invalid metric name`);
      if (keyword === "HELP") {
        assert.ok(!helps.has(name!), `${where}: a second HELP for ${name}`);
        assert.match(rest, /^(?:[^\\]|\\[\\n])*$/, `${where}: bad escape`);
        helps.set(name!, rest);
        return;
      }
      assert.ok(TYPES.has(rest), `${where}: unknown type "${rest}"`);
      assert.ok(!families.has(name!), `${where}: a second TYPE for ${name}`);
      current = { name: name!, help: "", type: rest, samples: [] };
      families.set(name!, current);
      return;
    }
    const sample = parseSample(line, where);
    assert.ok(
      current !== undefined && belongs(sample.name, current),
      `${where}: a sample with no TYPE line right before its group`,
    );
    const help = helps.get(current.name);
    assert.ok(help !== undefined, `${where}: no HELP line for ${current.name}`);
    current.help = help;
    if (current.type === "counter") {
      assert.match(sample.name, /_total$/, `${where}: a counter not in _total`);
      assert.ok(sample.value >= 0, `${where}: a negative counter`);
    }
    const key = seriesKey(sample.name, sample.labels);
    assert.ok(!series.has(key), `${where}: a repeated series`);
    series.add(key);
    current.samples.push(sample);
  });
  for (const family of families.values()) {
    if (family.type === "histogram" && family.samples.length > 0) {
      checkHistogram(family);
    }
  }
  return new Exposition(families);
}

/**
 * Scrapes `/metrics` over HTTP and checks the exposition.
 *
 * @param port The metrics endpoint's port on 127.0.0.1.
 * @returns The parsed exposition.
 * @throws {assert.AssertionError} When the reply breaks a rule.
 */
export async function scrape(port: number): Promise<Exposition> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.match(
    response.headers.get("content-type") ?? "",
    /^text\/plain; version=0\.0\.4/,
  );
  return parseExposition(text);
}

/**
 * Runs `promtool check metrics` on an exposition, the check Prometheus's own
 * tooling makes (names, types, help, units, label cardinality hints).
 *
 * @param text The exposition.
 * @returns What promtool printed when it failed, `""` when the text is clean,
 *   or `null` when promtool is not installed (under `CI=true`, which
 *   installs it, that throws instead).
 * @throws {Error} When promtool is missing under `CI=true`.
 */
export async function promtoolCheck(text: string): Promise<string | null> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    if (Deno.env.get("CI") === "true") {
      throw new Error("promtool is not installed (CI installs it: .ci/run)");
    }
    return null;
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  return success ? "" : decoder.decode(stdout) + decoder.decode(stderr);
}
