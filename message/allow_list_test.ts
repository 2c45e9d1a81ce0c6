import assert from "node:assert/strict";
import fc from "fast-check";
import { AllowList, checkAllowEntry, LOOPBACK } from "./allow_list.ts";

/** Asserts which of `peers` an allow-list made of `entries` lets in. */
function assertAllows(
  entries: readonly string[],
  allowed: readonly string[],
  denied: readonly string[],
): void {
  const list = new AllowList(entries);
  for (const peer of allowed) {
    assert.equal(
      list.allows(peer),
      true,
      `${JSON.stringify(entries)} should allow ${peer}`,
    );
  }
  for (const peer of denied) {
    assert.equal(
      list.allows(peer),
      false,
      `${JSON.stringify(entries)} should deny ${peer}`,
    );
  }
}

const INVALID_ADDRESSES = [
  "",
  " ",
  "abc",
  "localhost",
  "10.0.0.256",
  "256.0.0.0",
  "1.2.3",
  "1.2.3.4.5",
  "1..2.3",
  "1.2.3.",
  ".1.2.3",
  "1.2.3.-4",
  "1.2.3.+4",
  "1.2.3.0x4",
  "1.2.3.1e1",
  "1.2.3.0004",
  " 1.2.3.4",
  "1.2.3.4 ",
  "١.٢.٣.٤", // Arabic-Indic digits are not ASCII digits
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7",
  "1::2:3:4:5:6:7:8",
  "::1::",
  "1::2::3",
  ":::",
  ":1:2:3:4:5:6:7",
  "1:2:3:4:5:6:7:",
  "12345::",
  "g::1",
  "::1.2.3",
  "::1.2.3.256",
  "1.2.3.4::",
  "1:2:1.2.3.4::",
  "1.2.3.4::5",
  "::1.2.3.4:5",
  "1:2:3:4:5:6:7:1.2.3.4",
  "1:2:3:4:5:6:1.2.3.4:8",
  "[::1]",
];

// Matching

Deno.test("AllowList allows a single IPv4 address and nothing else", {
  permissions: "none",
}, () => {
  assertAllows(["10.0.0.1"], ["10.0.0.1"], [
    "10.0.0.2",
    "10.0.0.0",
    "10.0.1.1",
    "11.0.0.1",
    "0.0.0.0",
    "::1",
  ]);
});

Deno.test(
  "AllowList allows an IPv4 CIDR range from its first to its last address",
  { permissions: "none" },
  () => {
    assertAllows(
      ["10.0.0.0/8"],
      ["10.0.0.0", "10.0.0.1", "10.128.7.9", "10.255.255.255"],
      ["9.255.255.255", "11.0.0.0", "110.0.0.1", "1.0.0.10"],
    );
    assertAllows(
      ["192.168.1.0/24"],
      ["192.168.1.0", "192.168.1.255"],
      ["192.168.0.255", "192.168.2.0"],
    );
  },
);

Deno.test(
  "AllowList treats an IPv4 /32 as one address and /0 as every IPv4 address",
  { permissions: "none" },
  () => {
    assertAllows(["10.1.2.3/32"], ["10.1.2.3"], ["10.1.2.2", "10.1.2.4"]);
    assertAllows(
      ["0.0.0.0/0"],
      ["0.0.0.0", "1.2.3.4", "127.0.0.1", "255.255.255.255", "::ffff:1.2.3.4"],
      ["::", "::1", "2001:db8::1"],
    );
  },
);

Deno.test(
  "AllowList applies prefixes that do not end on a byte boundary (/13, /31, /1)",
  { permissions: "none" },
  () => {
    // 10.8.0.0/13 spans 10.8.0.0 to 10.15.255.255.
    assertAllows(
      ["10.8.0.0/13"],
      ["10.8.0.0", "10.9.1.2", "10.15.255.255"],
      ["10.7.255.255", "10.16.0.0", "11.8.0.0"],
    );
    assertAllows(["10.0.0.2/31"], ["10.0.0.2", "10.0.0.3"], [
      "10.0.0.1",
      "10.0.0.4",
    ]);
    assertAllows(["128.0.0.0/1"], ["128.0.0.0", "255.255.255.255"], [
      "127.255.255.255",
      "0.0.0.0",
    ]);
  },
);

Deno.test("AllowList ignores the host bits of a range's base address", {
  permissions: "none",
}, () => {
  assertAllows(["10.9.1.2/13"], ["10.8.0.0", "10.15.255.255"], [
    "10.16.0.0",
    "10.7.255.255",
  ]);
});

Deno.test("AllowList allows a peer covered by any one of its entries", {
  permissions: "none",
}, () => {
  assertAllows(
    ["10.0.0.0/8", "192.168.1.7", "fd00::/8"],
    ["10.1.1.1", "192.168.1.7", "fd12::1"],
    ["192.168.1.8", "fe00::1", "11.0.0.0"],
  );
});

Deno.test(
  "AllowList with no entries allows nobody",
  { permissions: "none" },
  () => {
    assertAllows([], [], ["127.0.0.1", "::1", "10.0.0.1"]);
  },
);

Deno.test("AllowList accepts leading zeros in IPv4 parts as decimal", {
  permissions: "none",
}, () => {
  assertAllows(["010.000.000.001"], ["10.0.0.1"], ["8.0.0.1"]);
});

Deno.test(
  "AllowList allows an IPv6 address written in any of its equivalent forms",
  { permissions: "none" },
  () => {
    assertAllows(
      ["2001:db8::1"],
      [
        "2001:db8::1",
        "2001:DB8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "2001:db8:0:0:0:0:0:1",
        "2001:db8::0:1",
      ],
      ["2001:db8::2", "2001:db8:1::1", "2001:db9::1"],
    );
    assertAllows(["FE80::AB"], ["fe80::ab", "fe80:0::00ab"], ["fe80::ac"]);
  },
);

Deno.test(
  "AllowList matches ::1 and :: exactly",
  { permissions: "none" },
  () => {
    assertAllows(["::1"], ["::1", "0:0:0:0:0:0:0:1", "0000::0001", "::0:1"], [
      "::",
      "::2",
      "1::",
      "127.0.0.1",
    ]);
    assertAllows(["::"], ["::", "0::0", "0:0:0:0:0:0:0:0"], ["::1", "0.0.0.0"]);
  },
);

Deno.test("AllowList allows an IPv6 CIDR range (/32, /13, /127, /128)", {
  permissions: "none",
}, () => {
  assertAllows(
    ["2001:db8::/32"],
    ["2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8:1::1"],
    ["2001:db9::", "2001:db7:ffff::1", "::1"],
  );
  // 2008::/13 spans 2008:: to 200f:ffff:…
  assertAllows(
    ["2008::/13"],
    ["2008::", "200f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "200a::1"],
    ["2007:ffff::", "2010::", "a008::"],
  );
  assertAllows(["fe80::/127"], ["fe80::", "fe80::1"], [
    "fe80::2",
    "fe80::3",
    "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
  ]);
  assertAllows(["fe80::5/128"], ["fe80::5"], ["fe80::4", "fe80::6"]);
});

Deno.test("AllowList treats ::/0 as every IPv6 address but not IPv4 peers", {
  permissions: "none",
}, () => {
  assertAllows(
    ["::/0"],
    ["::", "::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
    ["127.0.0.1", "0.0.0.0", "::ffff:10.1.2.3"],
  );
});

Deno.test("AllowList matches IPv4-mapped IPv6 peers against the IPv4 entries", {
  permissions: "none",
}, () => {
  assertAllows(
    ["10.0.0.0/8"],
    [
      "::ffff:10.1.2.3",
      "::FFFF:10.1.2.3",
      "0:0:0:0:0:ffff:10.1.2.3",
      "::ffff:a01:203",
      "::ffff:0a01:0203",
    ],
    [
      "::ffff:11.1.2.3",
      "::10.1.2.3",
      "::fffe:10.1.2.3",
      "::1:ffff:10.1.2.3",
      "1::ffff:10.1.2.3",
      "64:ff9b::10.1.2.3",
    ],
  );
  assertAllows(["10.1.2.3"], ["::ffff:10.1.2.3"], ["::ffff:10.1.2.4"]);
  assertAllows(LOOPBACK, ["::ffff:127.0.0.1"], ["::ffff:127.0.0.2"]);
});

Deno.test("AllowList treats an IPv4-mapped entry as the IPv4 address it maps", {
  permissions: "none",
}, () => {
  assertAllows(["::ffff:10.1.2.3"], [
    "10.1.2.3",
    "::ffff:10.1.2.3",
    "::ffff:a01:203",
  ], ["10.1.2.4", "::10.1.2.3"]);
  assertAllows(["::ffff:a01:203"], ["10.1.2.3"], ["10.1.2.4"]);
});

Deno.test(
  "AllowList counts the prefix of an IPv4-mapped range over all 128 bits",
  { permissions: "none" },
  () => {
    assertAllows(
      ["::ffff:10.0.0.0/104"],
      ["10.0.0.0", "10.255.255.255", "::ffff:10.200.0.1"],
      ["11.0.0.0", "9.255.255.255"],
    );
    assertAllows(["::ffff:0:0/96"], [
      "0.0.0.0",
      "1.2.3.4",
      "::ffff:255.255.255.255",
    ], ["::1", "::1.2.3.4"]);
    assertAllows(["::ffff:10.1.2.3/128"], ["10.1.2.3"], ["10.1.2.2"]);
    assertAllows(["::ffff:10.8.0.0/109"], ["10.15.0.1"], ["10.16.0.0"]);
  },
);

Deno.test(
  "AllowList keeps IPv4-compatible and other IPv6 forms of an IPv4 address apart from it",
  { permissions: "none" },
  () => {
    assertAllows(["::10.1.2.3"], ["::10.1.2.3", "::a01:203"], [
      "10.1.2.3",
      "::ffff:10.1.2.3",
    ]);
  },
);

Deno.test("AllowList accepts dotted quads at the end of an IPv6 address", {
  permissions: "none",
}, () => {
  assertAllows(
    ["64:ff9b::/96"],
    ["64:ff9b::1.2.3.4", "64:ff9b::102:304", "64:ff9b:0:0:0:0:1.2.3.4"],
    ["64:ff9c::1.2.3.4"],
  );
  assertAllows(["1:2:3:4:5:6:1.2.3.4"], ["1:2:3:4:5:6:102:304"], [
    "1:2:3:4:5:6:102:305",
  ]);
});

Deno.test("AllowList refuses an empty zone id or one with a slash", {
  permissions: "none",
}, () => {
  const everything = new AllowList(["0.0.0.0/0", "::/0"]);
  for (const text of ["::%/", "::%", "fe80::1%a/b"]) {
    assert.equal(everything.allows(text), false, text);
    assert.notEqual(checkAllowEntry(text), null, text);
  }
});

Deno.test("AllowList ignores the zone id of a link-local peer or entry", {
  permissions: "none",
}, () => {
  assertAllows(["fe80::1"], ["fe80::1%eth0", "fe80::1%25", "fe80::1%1"], [
    "fe80::2%eth0",
  ]);
  assertAllows(["fe80::/10"], ["fe80::1%eth0", "febf::1%lo"], ["fec0::1%eth0"]);
  assertAllows(["fe80::1%eth0"], ["fe80::1", "fe80::1%eth1"], ["fe80::2"]);
});

Deno.test(
  "LOOPBACK allows exactly 127.0.0.1 and ::1",
  { permissions: "none" },
  () => {
    assert.deepEqual(LOOPBACK, ["127.0.0.1", "::1"]);
    assertAllows(LOOPBACK, ["127.0.0.1", "::1", "::ffff:127.0.0.1"], [
      "127.0.0.2",
      "::2",
      "10.0.0.1",
      "::",
    ]);
  },
);

Deno.test("AllowList never allows a peer address that is not an IP address", {
  permissions: "none",
}, () => {
  const everything = new AllowList(["0.0.0.0/0", "::/0", "::ffff:0:0/96"]);
  const peers = [
    ...INVALID_ADDRESSES,
    "10.0.0.1/8",
    "::1/128",
    "10.0.0.0/33",
    "fe80::1/64%eth0",
    "10.0.0.1%eth0",
  ];
  for (const peer of peers) {
    assert.equal(everything.allows(peer), false, JSON.stringify(peer));
  }
});

// Validation

Deno.test("checkAllowEntry() accepts addresses and ranges of every form", {
  permissions: "none",
}, () => {
  const valid = [
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.0/0",
    "10.0.0.0/8",
    "10.8.0.0/13",
    "10.1.2.3/32",
    "::",
    "::1",
    "::/0",
    "::1/128",
    "fe80::/127",
    "2008::/13",
    "1::",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8",
    "ABCD:ef01::ffff",
    "::ffff:10.1.2.3",
    "::ffff:0:0/96",
    "::ffff:10.0.0.0/104",
    "::1.2.3.4",
    "1:2:3:4:5:6:1.2.3.4",
    "fe80::1%eth0",
    "10.0.0.0/08",
  ];
  for (const entry of valid) {
    assert.equal(checkAllowEntry(entry), null, entry);
  }
  assert.doesNotThrow(() => new AllowList(valid));
});

Deno.test("checkAllowEntry() explains an entry that is not an address", {
  permissions: "none",
}, () => {
  for (const entry of INVALID_ADDRESSES) {
    assert.equal(
      checkAllowEntry(entry),
      `${JSON.stringify(entry)} is not an IP address or CIDR range`,
      JSON.stringify(entry),
    );
  }
  for (
    const entry of ["10.0.0.256/8", "1.2.3/24", "abc/8", "::1::/64", "/8", "/"]
  ) {
    assert.equal(
      checkAllowEntry(entry),
      `"${entry}" is not an IP address or CIDR range`,
    );
  }
});

Deno.test(
  "checkAllowEntry() explains an invalid prefix length with the range allowed",
  { permissions: "none" },
  () => {
    const ipv4 = [
      "10.0.0.0/33",
      "10.0.0.0/x",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/ 8",
      "10.0.0.0/8 ",
      "10.0.0.0/8/8",
      "10.0.0.0/1e1",
      "10.0.0.0/0x8",
      "10.0.0.0/8.0",
      "10.0.0.0/1000",
      "10.0.0.0/٨",
    ];
    for (const entry of ipv4) {
      assert.equal(
        checkAllowEntry(entry),
        `"${entry}" has an invalid prefix length: expected 0 to 32`,
        entry,
      );
    }
    for (const entry of ["::1/129", "::/x", "fe80::/", "::/0128"]) {
      assert.equal(
        checkAllowEntry(entry),
        `"${entry}" has an invalid prefix length: expected 0 to 128`,
        entry,
      );
    }
    for (
      const entry of [
        "::ffff:10.0.0.0/8",
        "::ffff:10.0.0.0/32",
        "::ffff:0:0/95",
        "::ffff:10.0.0.0/129",
      ]
    ) {
      assert.equal(
        checkAllowEntry(entry),
        `"${entry}" has an invalid prefix length: expected 96 to 128`,
        entry,
      );
    }
  },
);

Deno.test("new AllowList() throws a TypeError naming the first invalid entry", {
  permissions: "none",
}, () => {
  for (
    const entry of [
      "10.0.0.256",
      "1.2.3",
      "10.0.0.0/33",
      "::1/129",
      "1:2:3:4:5:6:7:8:9",
      "::1::",
      "abc",
      "10.0.0.0/x",
      "",
    ]
  ) {
    assert.throws(
      () => new AllowList(["127.0.0.1", entry, "also bad"]),
      (error: unknown) =>
        error instanceof TypeError && error.message === checkAllowEntry(entry),
      JSON.stringify(entry),
    );
  }
});

// Properties

function ipv4Text(value: number): string {
  return [
    value >>> 24,
    (value >>> 16) & 0xff,
    (value >>> 8) & 0xff,
    value & 0xff,
  ].join(".");
}

Deno.test(
  "AllowList matches IPv4 ranges exactly like masked integer comparison (property)",
  { permissions: "none" },
  () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.integer({ min: 0, max: 32 }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 32 }),
        (base, prefix, other, flipped) => {
          // Half the time, make the peer share a long prefix with the base.
          const peer = flipped === 32
            ? other
            : (base ^ (2 ** (31 - (flipped % 32)))) >>> 0;
          const shift = 32 - prefix;
          const expected = prefix === 0 ||
            Math.floor(base / 2 ** shift) === Math.floor(peer / 2 ** shift);
          const list = new AllowList([`${ipv4Text(base)}/${prefix}`]);
          assert.equal(list.allows(ipv4Text(peer)), expected);
          assert.equal(list.allows(`::ffff:${ipv4Text(peer)}`), expected);
        },
      ),
      { numRuns: 1000 },
    );
  },
);

/** Writes 8 groups as IPv6 text in one of several equivalent styles. */
function ipv6Text(groups: readonly number[], style: number): string {
  const hex = groups.map((group) => group.toString(16));
  switch (style % 4) {
    case 0:
      return hex.join(":");
    case 1:
      return groups.map((group) =>
        group.toString(16).padStart(4, "0").toUpperCase()
      ).join(":");
    case 2: {
      // Compress the longest run of zero groups, if any.
      let best = -1, bestLength = 0;
      for (let i = 0; i < 8; i++) {
        let j = i;
        while (j < 8 && groups[j] === 0) j++;
        if (j - i > bestLength) [best, bestLength] = [i, j - i];
      }
      if (bestLength === 0) return hex.join(":");
      return `${hex.slice(0, best).join(":")}::${
        hex.slice(best + bestLength).join(":")
      }`;
    }
    default:
      return `${hex.join(":")}%eth${style}`;
  }
}

function ipv6BigInt(groups: readonly number[]): bigint {
  return groups.reduce((value, group) => (value << 16n) | BigInt(group), 0n);
}

const group = fc.oneof(
  fc.constant(0),
  fc.constant(0xffff),
  fc.nat({ max: 0xffff }),
);
const groups = fc.array(group, { minLength: 8, maxLength: 8 }).filter(
  // IPv4-mapped addresses count as IPv4; they have their own tests.
  (g) => !(g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff),
);

Deno.test(
  "AllowList matches IPv6 ranges exactly like masked 128-bit comparison, whatever the notation (property)",
  { permissions: "none" },
  () => {
    fc.assert(
      fc.property(
        groups,
        fc.integer({ min: 0, max: 128 }),
        groups,
        fc.nat({ max: 128 }),
        fc.nat(),
        fc.nat(),
        (base, prefix, other, flipped, baseStyle, peerStyle) => {
          let peer = other;
          if (flipped < 128) {
            // Flip one bit of the base, so the peer shares a prefix with it.
            peer = [...base];
            const index = flipped >> 4;
            peer[index] = peer[index]! ^ (0x8000 >> (flipped & 15));
            if (peer.slice(0, 5).every((x) => x === 0) && peer[5] === 0xffff) {
              return;
            }
          }
          const shift = BigInt(128 - prefix);
          const expected =
            ipv6BigInt(base) >> shift === ipv6BigInt(peer) >> shift;
          const list = new AllowList([
            `${ipv6Text(base, baseStyle).replace(/%.*/, "")}/${prefix}`,
          ]);
          assert.equal(list.allows(ipv6Text(peer, peerStyle)), expected);
        },
      ),
      { numRuns: 1000 },
    );
  },
);

Deno.test(
  "AllowList entries of every address fast-check generates are valid and allow that address (property)",
  { permissions: "none" },
  () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (address) => {
        assert.equal(checkAllowEntry(address), null);
        assert.equal(new AllowList([address]).allows(address), true);
        const bits = address.includes(":") ? 128 : 32;
        assert.equal(checkAllowEntry(`${address}/${bits}`), null);
        assert.notEqual(checkAllowEntry(`${address}/${bits + 1}`), null);
      }),
      { numRuns: 1000 },
    );
  },
);

Deno.test(
  "AllowList allows a string exactly when checkAllowEntry() accepts it as an address (property)",
  { permissions: "none" },
  () => {
    const everything = new AllowList(["0.0.0.0/0", "::/0"]);
    const alphabet = fc.constantFrom(
      ..."0123456789abcdefABCDEF:.%/ x-".split(""),
    );
    const candidates = fc.oneof(
      fc.string({ unit: alphabet, maxLength: 45 }),
      fc.ipV4(),
      fc.ipV6(),
      fc.string({ unit: "binary", maxLength: 20 }),
    );
    fc.assert(
      fc.property(candidates, (text) => {
        const valid = !text.includes("/") && checkAllowEntry(text) === null;
        assert.equal(everything.allows(text), valid);
      }),
      { numRuns: 2000 },
    );
  },
);
