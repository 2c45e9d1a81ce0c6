/**
 * Test helper: a throw-away etcd cluster on free loopback ports in a temp dir,
 * with the failures the cluster tests need (SIGKILL, SIGSTOP/SIGCONT, restart).
 * Tests that need etcd are declared with {@linkcode etcdTest}: they are skipped
 * with a printed reason when `etcd` is missing, except under `CI=true`, where a
 * missing etcd fails them.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import type { Certificates } from "./certificates.ts";
import { deadline } from "./helpers.ts";

/** Options of {@linkcode startEtcdCluster}. */
export interface EtcdClusterOptions {
  /**
   * How many members.
   *
   * @default {3}
   */
  members?: number;
  /**
   * Extra flags for every member (for example `--quota-backend-bytes=…`).
   *
   * @default {[]}
   */
  flags?: string[];
  /**
   * Serve clients over https with the server certificate of these, and
   * accept only clients with a certificate their CA signed
   * (`--client-cert-auth`). Peers stay on http.
   */
  tls?: Certificates | undefined;
  /**
   * Turn etcd's authentication on once the members are healthy: users `root`
   * and `pklock` get this password; `pklock` may read and write `/pklock/`
   * only.
   */
  authPassword?: string | undefined;
  /**
   * Issue JWT auth tokens that expire this many seconds after they were
   * issued, used or not (simple tokens, the default, live on while used).
   */
  jwtTtlSeconds?: number | undefined;
  /**
   * The client and peer ports of the first try, member by member (client
   * port, peer port, …); later tries, and the default, use free ones. For
   * the tests of this helper.
   */
  ports?: number[] | undefined;
}

/** How long a member may take to answer `/health` after its spawn. */
const HEALTHY_WITHIN_MS = 15_000;

/** How long one etcd test may run before it fails instead of hanging. */
const TEST_BOUND_MS = 120_000;

/** The progress-notify interval of every member; watches expect it. */
export const PROGRESS_NOTIFY_MS = 1_000;

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  child: Deno.ChildProcess | null;
  /** Whether `child` exited without being killed. */
  exited: boolean;
  log: Promise<void>;
}

/** A member did not start on the ports it was given; another try may. */
class MemberStartError extends Error {}

/** How many times a cluster is started on new ports before giving up. */
const START_ATTEMPTS = 3;

/** A running etcd cluster; dispose of it with `await using`. */
export class EtcdCluster implements AsyncDisposable {
  readonly #dir: string;
  readonly #members: Member[];
  readonly #flags: string[];
  readonly #tls: Certificates | undefined;
  readonly #http: Deno.HttpClient | undefined;

  /** @internal Use {@linkcode startEtcdCluster}. */
  constructor(
    dir: string,
    members: Member[],
    flags: string[],
    tls?: Certificates,
  ) {
    this.#dir = dir;
    this.#members = members;
    this.#flags = flags;
    this.#tls = tls;
    this.#http = tls && Deno.createHttpClient({
      caCerts: [tls.ca],
      cert: Deno.readTextFileSync(tls.clientCertFile),
      key: Deno.readTextFileSync(tls.clientKeyFile),
    });
  }

  /** The temp dir of the members' data and logs, removed on disposal. */
  get dir(): string {
    return this.#dir;
  }

  /** Every member's client URL, member 0 first. */
  get endpoints(): string[] {
    return this.#members.map((m) => this.#url(m.clientPort));
  }

  /**
   * One member's client URL.
   *
   * @param n The member's index.
   * @returns Its URL.
   */
  endpoint(n: number): string {
    return this.#url(this.#member(n).clientPort);
  }

  /** The process id of member `n`. */
  pid(n: number): number {
    const child = this.#member(n).child;
    if (!child) throw new Error(`Member ${n} is not running`);
    return child.pid;
  }

  /**
   * Which member leads, as the running members report it.
   *
   * @returns The leader's index.
   * @throws {Error} When no member reports a leader within 10 s.
   */
  async leader(): Promise<number> {
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      for (const [n, member] of this.#members.entries()) {
        if (!member.child) continue;
        const status = await this.#post(
          member.clientPort,
          "/v3/maintenance/status",
        ).catch(() => null);
        if (status && status.leader === status.header?.member_id) return n;
      }
      await delay(50);
    }
    throw new Error("No etcd member reports being the leader");
  }

  /** Kills member `n` with SIGKILL and waits for it to exit. */
  async kill(n: number): Promise<void> {
    const member = this.#member(n);
    const child = member.child;
    if (!child) return;
    member.child = null;
    child.kill("SIGKILL");
    await child.status;
    await member.log;
  }

  /**
   * Freezes member `n` (SIGSTOP), and returns once every thread of it has
   * stopped: the signal is delivered asynchronously, and on a busy machine
   * a member could otherwise still answer a request sent just after.
   */
  async stop(n: number): Promise<void> {
    const child = this.#running(n);
    child.kill("SIGSTOP");
    await deadline(stopped(child.pid), 5_000, `member ${n} to stop`);
  }

  /** Resumes member `n` (SIGCONT). */
  cont(n: number): void {
    this.#running(n).kill("SIGCONT");
  }

  /**
   * Kills member `n` if it runs, starts it again on its data dir and ports,
   * and waits until it is healthy.
   */
  async restart(n: number): Promise<void> {
    await this.kill(n);
    this.#spawn(this.#member(n), "existing");
    await this.#waitHealthy([this.#member(n)]);
  }

  /**
   * Runs `etcdctl` against member 0, with the client certificate when the
   * members require one.
   *
   * @param args Its arguments.
   * @returns Its output.
   * @throws {Error} When it fails.
   */
  async etcdctl(...args: string[]): Promise<string> {
    const tls = this.#tls;
    const { success, stdout, stderr } = await new Deno.Command("etcdctl", {
      args: [
        `--endpoints=${this.endpoint(0)}`,
        ...(tls
          ? [
            `--cacert=${tls.caFile}`,
            `--cert=${tls.clientCertFile}`,
            `--key=${tls.clientKeyFile}`,
          ]
          : []),
        ...args,
      ],
      env: { ETCDCTL_API: "3" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    if (!success) {
      throw new Error(
        `etcdctl ${args.join(" ")} failed: ${text.decode(stderr)}`,
      );
    }
    return text.decode(stdout);
  }

  /** Kills every member and removes the temp dir. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#members.map((_, n) => this.kill(n)));
    this.#http?.close();
    await Deno.remove(this.#dir, { recursive: true });
  }

  /** @internal Starts every member and waits until all are healthy. */
  async start(): Promise<void> {
    for (const member of this.#members) this.#spawn(member, "new");
    await this.#waitHealthy(this.#members);
  }

  /** @internal Adds the users and turns etcd's authentication on. */
  async enableAuth(password: string): Promise<void> {
    await this.etcdctl("user", "add", `root:${password}`);
    await this.etcdctl("user", "add", `pklock:${password}`);
    await this.etcdctl("role", "add", "pklock");
    await this.etcdctl(
      "role",
      "grant-permission",
      "pklock",
      "--prefix=true",
      "readwrite",
      "/pklock/",
    );
    await this.etcdctl("user", "grant-role", "pklock", "pklock");
    await this.etcdctl("auth", "enable");
  }

  #spawn(member: Member, state: "new" | "existing"): void {
    const cluster = this.#members.map((m) => `${m.name}=${url(m.peerPort)}`)
      .join(",");
    // setpriv(1) execs etcd with a parent-death signal, so a member dies
    // with the process that started it, even by kill -9 (Deno forks from its
    // main thread, which lives as long as the process).
    const child = new Deno.Command("setpriv", {
      args: [
        "--pdeathsig",
        "KILL",
        "etcd",
        `--name=${member.name}`,
        `--data-dir=${this.#dir}/${member.name}`,
        `--listen-client-urls=${this.#url(member.clientPort)}`,
        `--advertise-client-urls=${this.#url(member.clientPort)}`,
        `--listen-peer-urls=${url(member.peerPort)}`,
        `--initial-advertise-peer-urls=${url(member.peerPort)}`,
        `--initial-cluster=${cluster}`,
        `--initial-cluster-token=pklock-test`,
        `--initial-cluster-state=${state}`,
        "--logger=zap",
        "--log-level=error",
        "--unsafe-no-fsync",
        `--experimental-watch-progress-notify-interval=${PROGRESS_NOTIFY_MS}ms`,
        ...(this.#tls
          ? [
            `--cert-file=${this.#tls.certFile}`,
            `--key-file=${this.#tls.keyFile}`,
            `--trusted-ca-file=${this.#tls.caFile}`,
            "--client-cert-auth",
          ]
          : []),
        ...this.#flags,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    member.child = child;
    member.exited = false;
    child.status.then(() => {
      if (member.child === child) member.exited = true;
    });
    member.log = appendTo(`${this.#dir}/${member.name}.log`, child.stderr);
  }

  #member(n: number): Member {
    const member = this.#members[n];
    if (!member) throw new Error(`No member ${n}`);
    return member;
  }

  #running(n: number): Deno.ChildProcess {
    const child = this.#member(n).child;
    if (!child) throw new Error(`Member ${n} is not running`);
    return child;
  }

  #url(port: number): string {
    return this.#tls ? `https://127.0.0.1:${port}` : url(port);
  }

  #fetch(port: number, path: string, init: RequestInit): Promise<Response> {
    const options: RequestInit & { client?: Deno.HttpClient } = {
      ...init,
      signal: AbortSignal.timeout(1_000),
    };
    if (this.#http) options.client = this.#http;
    return fetch(`${this.#url(port)}${path}`, options);
  }

  async #post(
    port: number,
    path: string,
  ): Promise<
    {
      leader?: string;
      header?: { member_id?: string };
      members?: { ID?: string; name?: string }[];
    } | null
  > {
    const response = await this.#fetch(port, path, {
      method: "POST",
      body: "{}",
    });
    if (!response.ok) {
      await response.body?.cancel();
      return null;
    }
    return await response.json();
  }

  /**
   * Whether the etcd answering on `member`'s client port is `member`, by
   * name.
   *
   * @throws {Error} When another etcd answers there: the port, free when
   *   picked, was taken before the member could listen on it (tests run in
   *   parallel), and the member did not start.
   */
  async #answersAs(member: Member): Promise<boolean> {
    const list = await this.#post(member.clientPort, "/v3/cluster/member/list")
      .catch(() => null);
    if (list === null) return false;
    const self = list.members?.find((m) => m.ID === list.header?.member_id);
    if (self?.name === member.name) return true;
    throw new MemberStartError(
      `etcd member ${member.name}: port ${member.clientPort} answers as ${self?.name}`,
    );
  }

  async #waitHealthy(members: Member[]): Promise<void> {
    const until = Date.now() + HEALTHY_WITHIN_MS;
    for (const member of members) {
      while (true) {
        const healthy = await this.#fetch(member.clientPort, "/health", {})
          .then((r) => r.json()).then((body) => body.health === "true")
          .catch(() => false);
        if (healthy && await this.#answersAs(member)) break;
        if (member.exited) {
          throw new MemberStartError(
            `etcd member ${member.name} exited while starting (its ports may have been taken): see ${this.#dir}/${member.name}.log`,
          );
        }
        if (Date.now() > until || !member.child) {
          throw new Error(
            `etcd member ${member.name} not healthy within ${HEALTHY_WITHIN_MS} ms`,
          );
        }
        await delay(50);
      }
    }
  }
}

/**
 * Starts an etcd cluster on fresh loopback ports (never 2379/2380) in a temp
 * dir, and waits until every member answers `/health`.
 *
 * @param options How many members, extra flags.
 * @returns The cluster; dispose of it with `await using`.
 */
export async function startEtcdCluster(
  options: EtcdClusterOptions = {},
): Promise<EtcdCluster> {
  for (let attempt = 1;; attempt++) {
    try {
      const ports = attempt === 1 ? options.ports : undefined;
      return await startOnce(options, ports);
    } catch (error) {
      if (!(error instanceof MemberStartError) || attempt === START_ATTEMPTS) {
        throw error;
      }
    }
  }
}

async function startOnce(
  options: EtcdClusterOptions,
  given: number[] | undefined,
): Promise<EtcdCluster> {
  const count = options.members ?? 3;
  const dir = await Deno.makeTempDir({ prefix: "pklock-etcd-" });
  const ports = given ?? freePorts(2 * count);
  // Names of this cluster only: a member that answers on a port it was
  // given is known to be its own, not another test's (#waitHealthy).
  const tag = dir.slice(dir.lastIndexOf("-") + 1);
  const members: Member[] = [];
  for (let i = 0; i < count; i++) {
    members.push({
      name: `m${i}-${tag}`,
      clientPort: ports[2 * i]!,
      peerPort: ports[2 * i + 1]!,
      child: null,
      exited: false,
      log: Promise.resolve(),
    });
  }
  const flags = [...options.flags ?? []];
  if (options.jwtTtlSeconds !== undefined) {
    try {
      flags.push(await jwtFlag(dir, options.jwtTtlSeconds));
    } catch (error) {
      await Deno.remove(dir, { recursive: true });
      throw error;
    }
  }
  const cluster = new EtcdCluster(dir, members, flags, options.tls);
  try {
    await cluster.start();
    if (options.authPassword !== undefined) {
      await cluster.enableAuth(options.authPassword);
    }
  } catch (error) {
    await cluster[Symbol.asyncDispose]();
    throw error;
  }
  return cluster;
}

/** Why etcd tests cannot run here, or `null` when `etcd` is on PATH. */
export const ETCD_MISSING: string | null = await findEtcd();

/**
 * Declares a test that needs etcd: skipped with the reason printed when `etcd`
 * is missing, failed instead under `CI=true`.
 *
 * @param name The test's name.
 * @param fn The test.
 */
export function etcdTest(
  name: string,
  fn: (t: Deno.TestContext) => Promise<void>,
): void {
  if (ETCD_MISSING === null) {
    Deno.test(name, (t) => deadline(fn(t), TEST_BOUND_MS, `"${name}" to end`));
  } else if (Deno.env.get("CI") === "true") {
    Deno.test(name, () => {
      throw new Error(`${ETCD_MISSING}; CI=true requires it`);
    });
  } else {
    console.log(`Skipping "${name}": ${ETCD_MISSING}`);
    Deno.test({ name, ignore: true, fn });
  }
}

async function findEtcd(): Promise<string | null> {
  try {
    const output = await new Deno.Command("etcd", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return output.success ? null : "etcd --version failed";
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return "etcd is not installed (apt-get install etcd-server)";
    }
    throw error;
  }
}

function url(port: number): string {
  return `http://127.0.0.1:${port}`;
}

/** Ports the OS picked as free, all distinct, each released at once. */
export function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => l.addr.port);
  for (const listener of listeners) listener.close();
  return ports;
}

/** `--auth-token=jwt,…` with an EC key pair made in `dir`. */
async function jwtFlag(dir: string, ttlSeconds: number): Promise<string> {
  for (
    const args of [
      [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "jwt.key",
      ],
      ["ec", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"],
    ]
  ) {
    const { success, stderr } = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!success) {
      throw new Error(`openssl failed: ${new TextDecoder().decode(stderr)}`);
    }
  }
  return `--auth-token=jwt,pub-key=${dir}/jwt.pub,priv-key=${dir}/jwt.key,sign-method=ES256,ttl=${ttlSeconds}s`;
}

async function appendTo(
  path: string,
  stream: ReadableStream<Uint8Array>,
): Promise<void> {
  const file = await Deno.open(path, { create: true, append: true });
  await stream.pipeTo(file.writable);
}

/**
 * Resolves once every thread of `pid` is stopped (state `T` in
 * `/proc/PID/task/TID/stat`); the kernel gives no event for another
 * process's stop but to its parent's `waitid`, which Deno does not expose.
 */
async function stopped(pid: number): Promise<void> {
  while (!await allStopped(pid)) await delay(1);
}

async function allStopped(pid: number): Promise<boolean> {
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    const path = `/proc/${pid}/task/${task.name}/stat`;
    const stat = await Deno.readTextFile(path).catch(() => "");
    // The state is the field after the command name, in parentheses.
    if (stat.slice(stat.lastIndexOf(")") + 2)[0] !== "T") return false;
  }
  return true;
}
