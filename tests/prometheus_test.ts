// The Prometheus exposition checker of tests/prometheus.ts, on hand-written
// text: it accepts valid text and rejects each broken rule.
import assert from "node:assert/strict";
import { parseExposition } from "./prometheus.ts";

Deno.test(
  "the exposition checker accepts valid text and rejects each broken rule",
  { permissions: "none" },
  () => {
    const valid = [
      "# HELP a_total Things, with a \\\\ and a \\n.",
      "# TYPE a_total counter",
      'a_total{code="say \\"hi\\"\\\\\\n"} 3',
      "# HELP h Durations.",
      "# TYPE h histogram",
      'h_bucket{le="0.1"} 1',
      'h_bucket{le="1"} 2',
      'h_bucket{le="+Inf"} 2',
      "h_sum 0.5",
      "h_count 2",
      "",
    ].join("\n");
    const parsed = parseExposition(valid);
    assert.equal(parsed.value("a_total", { code: 'say "hi"\\\n' }), 3);
    assert.equal(parsed.value("h_count"), 2);
    const broken: [string, string, RegExp][] = [
      ["a sample without HELP and TYPE", "x 1\n", /no TYPE line/],
      ["a sample without HELP", "# TYPE x gauge\nx 1\n", /no HELP line/],
      [
        "an invalid name",
        "# HELP 1x a\n# TYPE 1x gauge\n1x 1\n",
        /invalid metric name/,
      ],
      [
        "an unquoted label value",
        "# HELP x a\n# TYPE x gauge\nx{a=b} 1\n",
        /expected ="/,
      ],
      [
        "an invalid escape",
        '# HELP x a\n# TYPE x gauge\nx{a="\\t"} 1\n',
        /invalid escape/,
      ],
      [
        "an invalid escape in HELP",
        "# HELP x a \\t\n# TYPE x gauge\nx 1\n",
        /bad escape/,
      ],
      [
        "an unterminated value",
        '# HELP x a\n# TYPE x gauge\nx{a="b} 1\n',
        /unterminated/,
      ],
      [
        "a value that is no number",
        "# HELP x a\n# TYPE x gauge\nx one\n",
        /not a number/,
      ],
      [
        "a counter not in _total",
        "# HELP c a\n# TYPE c counter\nc 1\n",
        /not in _total/,
      ],
      [
        "a missing final line feed",
        "# HELP x a\n# TYPE x gauge\nx 1",
        /line feed/,
      ],
      [
        "buckets that are not cumulative",
        '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
        /not cumulative/,
      ],
      [
        "a +Inf bucket that differs from _count",
        '# HELP h a\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
        /differs from _count/,
      ],
      [
        "a histogram without a +Inf bucket",
        '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n',
        /no le="\+Inf"/,
      ],
      [
        "a family split in two groups",
        "# HELP x a\n# TYPE x gauge\n# HELP y a\n# TYPE y gauge\ny 1\nx 1\n",
        /no TYPE line/,
      ],
    ];
    for (const [what, text, why] of broken) {
      assert.throws(() => parseExposition(text), why, what);
    }
  },
);
