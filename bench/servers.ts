/**
 * Starting and stopping the servers under test, each as its own process on
 * 127.0.0.1 with its files in a temporary folder: pklock (`main.ts serve`),
 * the Deno socket floor (`floor_server.ts`),
 * `redis-server`, and a PostgreSQL cluster made with `initdb`. Every child is
 * registered so that an interrupted bench can kill what it started.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import { ByteReader } from "./peers/common.ts";

const decoder = new TextDecoder();

/** The servers the bench compares. */
export type ServerKind = "pklock" | "floor" | "redis" | "postgres" | "etcd";

/** A running server. */
export interface Server {
  /** Its kind. */
  kind: ServerKind;
  /** Its port on 127.0.0.1. */
  port: number;
  /** The process to account for (PostgreSQL: the postmaster). */
  pid: number;
  /** Whether its children are part of it (PostgreSQL's backends). */
  tree: boolean;
  /**
   * Further processes whose CPU counts as the server's (a cluster's other
   * nodes and its etcd members).
   */
  others?: readonly number[];
  /** Stops it and waits until it has exited. */
  stop(): Promise<void>;
}

/** Children alive now, killed by {@linkcode killAll} on an interrupt. */
const live = new Set<Deno.ChildProcess>();

/**
 * Registers a child so that {@linkcode killAll} reaches it.
 *
 * @param child The child.
 * @returns The child.
 */
export function track(child: Deno.ChildProcess): Deno.ChildProcess {
  live.add(child);
  child.status.finally(() => live.delete(child));
  return child;
}

/** Kills every child still running (SIGKILL), by its pid. */
export function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited meanwhile.
    }
  }
}

/**
 * The command line that runs `command` with `ulimit -n` raised to `files` and
 * its output appended to `log`.
 *
 * @param files The open-file limit.
 * @param log The log file.
 * @param command The program and its arguments.
 * @param keepStdout Whether standard output stays piped to us.
 * @returns The arguments of `bash`.
 */
export function limited(
  files: number,
  log: string,
  command: string[],
  keepStdout = false,
): string[] {
  const redirect = keepStdout ? '2>>"$log"' : '>>"$log" 2>&1';
  return [
    "-c",
    `ulimit -n "$1" || exit 97; log="$2"; shift 2; exec "$@" ${redirect}`,
    "bash",
    String(files),
    log,
    ...command,
  ];
}

/**
 * Waits for a child to exit, sending `signals` in turn, each after the
 * previous one was given `grace` ms.
 */
async function stopChild(
  child: Deno.ChildProcess,
  signals: Deno.Signal[],
  grace: number,
): Promise<void> {
  for (const signal of signals) {
    try {
      child.kill(signal);
    } catch {
      break; // Exited already.
    }
    const exited = new AbortController();
    child.status.then(() => exited.abort());
    if (await delay(grace, exited.signal)) return;
  }
  try {
    child.kill("SIGKILL");
  } catch {
    // Exited.
  }
  await child.status;
}

/**
 * A free TCP port on 127.0.0.1 (free when asked; the servers that cannot
 * listen on port 0 and report it use this).
 *
 * @returns The port.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Where and how to start pklock. */
export interface PklockOptions {
  /** The checkout whose main.ts runs. */
  root: string;
  /** A folder for its state and log files. */
  dir: string;
  /** The open-file limit. */
  files: number;
  /** pklock's `--log-level`, when not its default. */
  logLevel?: string | null;
  /** The etcd members to serve on as a cluster node (`--etcd`), if any. */
  etcd?: readonly string[];
}

/**
 * The V8 flags of the checkout's `deno task serve`, so that the bench runs
 * the server as users do.
 *
 * @param root The checkout.
 * @returns Its `--v8-flags=...` arguments.
 */
async function serveV8Flags(root: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`));
  const task: string = config.tasks?.serve ?? "";
  return task.split(/\s+/).filter((arg) => arg.startsWith("--v8-flags="));
}

/**
 * Starts `deno run -A main.ts serve --port 0`, with the V8 flags of
 * `deno task serve`, and reads the port it prints.
 *
 * @param options Where.
 * @returns The running server.
 */
export async function startPklock(options: PklockOptions): Promise<Server> {
  return startDeno("pklock", options, [
    ...await serveV8Flags(options.root),
    "--config",
    `${options.root}/deno.json`,
    `${options.root}/main.ts`,
    "serve",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    ...(options.logLevel ? ["--log-level", options.logLevel] : []),
    ...(options.etcd ? ["--etcd", options.etcd.join(",")] : []),
  ]);
}

/**
 * Starts bench/floor_server.ts (the Deno socket floor) with the V8 flags of
 * pklock's `deno task serve`, and reads the port it prints.
 *
 * @param options Where; `root` is the pklock checkout whose flags it copies.
 * @returns The running server.
 */
export async function startFloor(
  options: Omit<PklockOptions, "logLevel" | "etcd">,
): Promise<Server> {
  return startDeno("floor", options, [
    ...await serveV8Flags(options.root),
    decodeURIComponent(new URL("./floor_server.ts", import.meta.url).pathname),
  ]);
}

/** Runs `deno run -A ARGS` in `options.dir` until it prints its port. */
async function startDeno(
  kind: "pklock" | "floor",
  options: Omit<PklockOptions, "logLevel" | "etcd">,
  args: string[],
): Promise<Server> {
  const log = `${options.dir}/${kind}.log`;
  const child = track(
    new Deno.Command("bash", {
      args: limited(
        options.files,
        log,
        [Deno.execPath(), "run", "-A", ...args],
        true,
      ),
      // pklock's state file (fencing tokens) lands here, not in the checkout.
      cwd: options.dir,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn(),
  );
  const reader = child.stdout.getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${kind} did not start within 120 s`)),
      120_000,
    );
  });
  try {
    while (true) {
      const match = text.match(/listening on \S+:(\d+)/);
      if (match) {
        drain(reader);
        const port = Number(match[1]);
        return {
          kind,
          port,
          pid: child.pid,
          tree: false,
          stop: () => stopChild(child, ["SIGTERM"], 15_000),
        };
      }
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) {
        const tail = await readTail(log);
        throw new Error(`${kind} exited before listening:\n${text}${tail}`);
      }
      text += decoder.decode(value);
    }
  } catch (error) {
    await stopChild(child, ["SIGKILL"], 5000);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function drain(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<void> {
  try {
    while (!(await reader.read()).done) {
      // Discard.
    }
  } catch {
    // The process is gone.
  }
}

async function readTail(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).slice(-2000);
  } catch {
    return "";
  }
}

/**
 * Finds a program on the PATH.
 *
 * @param name The program.
 * @returns Its path, or `null`.
 */
export async function which(name: string): Promise<string | null> {
  const { success, stdout } = await new Deno.Command("bash", {
    args: ["-c", 'command -v "$1"', "bash", name],
    stdout: "piped",
    stderr: "null",
  }).output();
  return success ? decoder.decode(stdout).trim() : null;
}

/**
 * A program's `--version` line.
 *
 * @param program The program.
 * @returns The first line it prints.
 */
export async function versionOf(program: string): Promise<string> {
  try {
    const { stdout } = await new Deno.Command(program, {
      args: ["--version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return decoder.decode(stdout).split("\n")[0]!.trim();
  } catch {
    return "unknown";
  }
}

/** Where and how to start Redis. */
export interface RedisOptions {
  /** The `redis-server` program. */
  program: string;
  /** A folder for its log. */
  dir: string;
  /** The open-file limit; `maxclients` is set just under it. */
  files: number;
}

/**
 * Starts `redis-server` without persistence and waits until it answers PING.
 *
 * @param options Where.
 * @returns The running server.
 */
export async function startRedis(options: RedisOptions): Promise<Server> {
  const port = freePort();
  const log = `${options.dir}/redis.log`;
  const child = track(
    new Deno.Command("bash", {
      args: limited(options.files, log, [
        options.program,
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        String(options.files - 64),
        "--dir",
        options.dir,
        "--daemonize",
        "no",
        "--logfile",
        "",
      ]),
      cwd: options.dir,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn(),
  );
  const stop = () => stopChild(child, ["SIGTERM"], 15_000);
  const deadline = performance.now() + 30_000;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode("*1\r\n$4\r\nPING\r\n"));
        const reader = new ByteReader(conn);
        const length = await reader.line();
        if (reader.lineText(length) === "+PONG") break;
      } finally {
        conn.close();
      }
    } catch {
      // Not listening yet.
    }
    if (performance.now() > deadline) {
      await stop();
      throw new Error(
        `redis-server did not answer within 30 s:\n${await readTail(log)}`,
      );
    }
    await delay(50);
  }
  return { kind: "redis", port, pid: child.pid, tree: false, stop };
}

/** A PostgreSQL installation and the cluster the bench made with it. */
export interface PostgresCluster {
  /** The folder of `postgres`, `initdb` and `pg_isready`. */
  bin: string;
  /** The data folder, owned by the `postgres` user. */
  data: string;
  /** The folder of the cluster's socket and log (and of `data`). */
  dir: string;
  /** The uid and gid of the `postgres` user. */
  uid: number;
  gid: number;
}

/**
 * Finds the newest PostgreSQL under /usr/lib/postgresql.
 *
 * @returns The folder of its programs, or `null`.
 */
export function findPostgres(): string | null {
  let best: { version: number; bin: string } | null = null;
  try {
    for (const entry of Deno.readDirSync("/usr/lib/postgresql")) {
      const bin = `/usr/lib/postgresql/${entry.name}/bin`;
      const version = Number(entry.name);
      try {
        Deno.statSync(`${bin}/postgres`);
      } catch {
        continue;
      }
      if (best === null || version > best.version) best = { version, bin };
    }
  } catch {
    return null;
  }
  return best?.bin ?? null;
}

async function idOf(flag: "-u" | "-g", user: string): Promise<number> {
  const { success, stdout } = await new Deno.Command("id", {
    args: [flag, user],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!success) throw new Error(`There is no "${user}" user`);
  return Number(decoder.decode(stdout).trim());
}

/** Runs a program as the `postgres` user (root may not run PostgreSQL). */
function asPostgres(cluster: PostgresCluster, command: string[]): string[] {
  return [
    "setpriv",
    `--reuid=${cluster.uid}`,
    `--regid=${cluster.gid}`,
    "--init-groups",
    "--",
    ...command,
  ];
}

/**
 * Makes a new cluster in a temporary folder with `initdb` (trust
 * authentication, no fsync).
 *
 * @param bin The folder of the PostgreSQL programs.
 * @returns The cluster.
 */
export async function initPostgres(bin: string): Promise<PostgresCluster> {
  const uid = await idOf("-u", "postgres");
  const gid = await idOf("-g", "postgres");
  const dir = await Deno.makeTempDir({ prefix: "pklock-bench-pg-" });
  await Deno.chown(dir, uid, gid);
  const cluster = { bin, data: `${dir}/data`, dir, uid, gid };
  const { success, stdout, stderr } = await new Deno.Command(
    asPostgres(cluster, [])[0]!,
    {
      args: asPostgres(cluster, [
        `${bin}/initdb`,
        "-D",
        cluster.data,
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
      ]).slice(1),
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  if (!success) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(
      `initdb failed:\n${decoder.decode(stdout)}${decoder.decode(stderr)}`,
    );
  }
  return cluster;
}

/** How to start PostgreSQL. */
export interface PostgresOptions {
  /** The cluster. */
  cluster: PostgresCluster;
  /** `max_connections`. */
  maxConnections: number;
  /** The open-file limit. */
  files: number;
}

/**
 * Starts the postmaster on a free port and waits until `pg_isready` says so.
 *
 * @param options The cluster and its limits.
 * @returns The running server; its children are its backends.
 */
export async function startPostgres(options: PostgresOptions): Promise<Server> {
  const { cluster } = options;
  const port = freePort();
  const log = `${cluster.dir}/postgres.log`;
  const child = track(
    new Deno.Command("bash", {
      args: limited(
        options.files,
        log,
        asPostgres(cluster, [
          `${cluster.bin}/postgres`,
          "-D",
          cluster.data,
          "-p",
          String(port),
          "-c",
          "listen_addresses=127.0.0.1",
          "-c",
          `unix_socket_directories=${cluster.dir}`,
          "-c",
          `max_connections=${options.maxConnections}`,
          "-c",
          "shared_buffers=128MB",
          "-c",
          "fsync=off",
          "-c",
          "synchronous_commit=off",
          "-c",
          "full_page_writes=off",
          "-c",
          "log_min_messages=warning",
          "-c",
          "logging_collector=off",
        ]),
      ),
      cwd: cluster.dir,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn(),
  );
  // SIGINT is a fast shutdown (backends are told to exit); SIGQUIT, if that
  // is slow, is an immediate one. The cluster is thrown away anyway.
  const stop = () => stopChild(child, ["SIGINT", "SIGQUIT"], 60_000);
  const deadline = performance.now() + 60_000;
  while (true) {
    const { success } = await new Deno.Command(`${cluster.bin}/pg_isready`, {
      args: ["-q", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (success) break;
    const exited = await Promise.race([
      child.status.then(() => true),
      delay(100).then(() => false),
    ]);
    if (exited || performance.now() > deadline) {
      await stop();
      throw new Error(`PostgreSQL did not start:\n${await readTail(log)}`);
    }
  }
  return { kind: "postgres", port, pid: child.pid, tree: true, stop };
}
