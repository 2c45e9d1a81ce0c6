/**
 * `pklock serve`: runs the lock server until SIGINT or SIGTERM.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  loadSettings,
  readSettingFile,
  type Settings,
  SettingsError,
  type SettingsOverrides,
} from "../server/config.ts";
import { AuditLog } from "../server/audit.ts";
import { LockServer } from "../server/lock_server.ts";
import type { LockServerOptions } from "../server/lock_server_options.ts";
import { serveMetrics } from "../server/metrics.ts";
import { configureLogging, drainLogs, flushLogs } from "../server/log.ts";
import { StateFileError, TokenStore } from "../server/token_store.ts";
import { VERSION } from "../protocol/version.ts";
import { ClusterLockSpace } from "../cluster/cluster_space.ts";
import { EtcdClient, type EtcdClientOptions } from "../cluster/etcd.ts";
import { EtcdUnavailableError } from "../cluster/etcd_errors.ts";
import { ExitCode } from "./exit_codes.ts";

/** The secrets and certificates the settings name, read from their files. */
type Secrets = Pick<LockServerOptions, "secret" | "adminSecret" | "tls">;

async function readSecrets(settings: Settings): Promise<Secrets> {
  const read: Secrets = {};
  const { auth, admin, tls } = settings;
  if (auth !== undefined) read.secret = await secretOf(auth, "auth");
  if (admin !== undefined) read.adminSecret = await secretOf(admin, "admin");
  if (tls !== undefined) {
    read.tls = {
      cert: await readSettingFile(tls.certFile, `"tls.certFile" file`),
      key: await readSettingFile(tls.keyFile, `"tls.keyFile" file`),
    };
  }
  return read;
}

async function secretOf(
  given: { secret?: string | undefined; secretFile?: string | undefined },
  setting: string,
): Promise<string> {
  if (given.secret !== undefined) return given.secret;
  const file = given.secretFile!;
  const secret = (await readSettingFile(file, `"${setting}.secretFile" file`))
    .trim();
  if (secret.length < 16) {
    throw new SettingsError(
      `The secret in "${file}" (${setting}.secretFile) is shorter than 16 characters`,
    );
  }
  return secret;
}

/** Options of {@linkcode serve}. */
export interface ServeOptions extends SettingsOverrides {
  /** The settings file, if any. */
  config?: string;
}

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

/** What runs while serving, to be stopped in reverse order. */
interface Running {
  server: LockServer;
  metrics: Deno.HttpServer | undefined;
  audit: AuditLog | undefined;
  cluster: ClusterLockSpace | undefined;
  etcd: EtcdClient | undefined;
}

/**
 * Loads the settings, starts the server and serves until a signal arrives; a
 * second signal exits at once.
 *
 * @param options The settings file and command-line overrides.
 * @returns The exit code.
 */
export async function serve(options: ServeOptions): Promise<number> {
  let running: Running;
  try {
    running = await start(options);
  } catch (error) {
    if (!(error instanceof SettingsError || error instanceof StateFileError)) {
      throw error;
    }
    console.error(`pklock: ${error.message}`);
    return ExitCode.Config;
  }
  // One listener per signal, for the whole run: a second signal arriving in
  // the same tick as the first must still exit at once.
  const stop = Promise.withResolvers<string>();
  let signals = 0;
  for (const signal of SIGNALS) {
    Deno.addSignalListener(signal, () => {
      if (++signals > 1) {
        flushLogs();
        Deno.exit(ExitCode.Failure);
      }
      stop.resolve(signal);
    });
  }
  // A lock server that dies releases every lock: a hang-up (a closed
  // terminal) must not end it, and there is nothing to reload.
  Deno.addSignalListener("SIGHUP", () => {
    getLogger(["pklock", "server"]).warn(
      "Received SIGHUP: ignored (settings are not reloaded; restart to apply them)",
    );
  });
  const received = await stop.promise;
  getLogger(["pklock", "server"]).info(
    "Received {signal}: closing connections and exiting",
    { signal: received },
  );
  await running.server.close();
  await running.cluster?.[Symbol.asyncDispose]();
  running.etcd?.[Symbol.dispose]();
  await running.metrics?.shutdown();
  await running.audit?.close();
  await drainLogs(1_000);
  return ExitCode.Ok;
}

/**
 * Starts everything the settings ask for.
 *
 * @throws {SettingsError} When a setting cannot be honoured.
 * @throws {StateFileError} When the token state file is unusable.
 */
async function start(options: ServeOptions): Promise<Running> {
  const { config, ...overrides } = options;
  const settings = await loadSettings(config, overrides);
  await configureLogging(settings.log.level, settings.log.format);
  const secrets = await readSecrets(settings);
  const etcd = settings.cluster && await etcdClient(settings.cluster);
  const cluster = etcd && await joinCluster(etcd, settings.cluster!);
  const space = cluster
    ? { lockSpace: (events: Events) => cluster.bind(events) }
    : tokenSource(settings.stateFile, () => server.resumeGrants());
  const where = config === undefined ? "" : ` (settings file "${config}")`;
  let audit: AuditLog | undefined;
  if (settings.audit !== undefined) {
    try {
      audit = await AuditLog.open(settings.audit.file);
    } catch (cause) {
      throw new SettingsError(
        `Cannot open audit file "${settings.audit.file}"${where}: ${
          (cause as Error).message
        }`,
        { cause },
      );
    }
  }
  let server: LockServer;
  try {
    server = new LockServer({
      hostname: settings.host,
      port: settings.port,
      allowed: settings.allowed,
      ...settings.limits,
      ...(settings.heartbeat ? { heartbeat: settings.heartbeat } : {}),
      ...(settings.metrics
        ? { metrics: { lockPatterns: settings.metrics.lockPatterns } }
        : {}),
      ...(settings.alarms ? { alarms: settings.alarms } : {}),
      ...(audit ? { audit } : {}),
      ...secrets,
      ...space,
    });
  } catch (cause) {
    await cluster?.[Symbol.asyncDispose]();
    etcd?.[Symbol.dispose]();
    await audit?.close();
    throw new SettingsError(
      `Cannot listen on ${settings.host}:${settings.port}${where}: ${
        (cause as Error).message
      }`,
      { cause },
    );
  }
  let metrics: Deno.HttpServer | undefined;
  if (settings.metrics !== undefined && server.metrics !== undefined) {
    const { host, port } = settings.metrics;
    try {
      metrics = serveMetrics(server.metrics, { hostname: host, port });
    } catch (cause) {
      await server.close();
      await cluster?.[Symbol.asyncDispose]();
      etcd?.[Symbol.dispose]();
      await audit?.close();
      throw new SettingsError(
        `Cannot serve metrics on ${host}:${port}${where}: ${
          (cause as Error).message
        }`,
        { cause },
      );
    }
  }
  // Printed once everything is bound: whoever waits for this line can use it.
  const { hostname, port } = server.addr;
  console.log(`pklock ${VERSION} listening on ${hostname}:${port}`);
  if (metrics !== undefined) {
    const addr = metrics.addr as Deno.NetAddr;
    console.log(
      `pklock metrics on http://${addr.hostname}:${addr.port}/metrics`,
    );
  }
  if (cluster !== undefined) {
    const { node, nodes } = cluster.cluster();
    console.log(
      `pklock node ${node} on etcd ${
        settings.cluster!.endpoints.join(",")
      }; live nodes: ${nodes.length}`,
    );
  }
  return { server, metrics, audit, cluster, etcd };
}

type Events = Parameters<NonNullable<LockServerOptions["lockSpace"]>>[0];

/**
 * The single server's tokens: reserved in blocks in the state file.
 *
 * @param stateFile The state file.
 * @param resume Grants the waiters whose turn came while no token could be
 *   had, once tokens are available again.
 */
function tokenSource(
  stateFile: string,
  resume: () => void,
): LockServerOptions {
  const tokens = TokenStore.open(stateFile, {
    onReserveFailed: (error, retryInMs) =>
      getLogger(["pklock", "server"]).warn(
        "Cannot reserve fencing tokens (next attempt: {retry}): {error}",
        {
          retry: retryInMs === null ? "none" : `in ${retryInMs} ms`,
          error: error.message,
        },
      ),
    onAvailable: resume,
  });
  return {
    nextToken: () => tokens.next(),
    tokensLeft: () => tokens.left,
  };
}

/** The etcd password's variable, when `cluster.auth` names no file. */
const ETCD_PASSWORD_VARIABLE = "PKLOCK_ETCD_PASSWORD";

/**
 * The etcd client of the `cluster` settings, with its password and
 * certificates read from their files.
 *
 * @throws {SettingsError} When a file cannot be read, or no password is
 *   given.
 */
async function etcdClient(
  settings: NonNullable<Settings["cluster"]>,
): Promise<EtcdClient> {
  const { auth, tls } = settings;
  let credentials: EtcdClientOptions["credentials"];
  if (auth !== undefined) {
    const password = auth.passwordFile === undefined
      ? Deno.env.get(ETCD_PASSWORD_VARIABLE)
      : (await readSettingFile(
        auth.passwordFile,
        `"cluster.auth.passwordFile" file`,
      )).trim();
    if (!password) {
      throw new SettingsError(
        `No etcd password for user "${auth.user}": set "cluster.auth.passwordFile" or ${ETCD_PASSWORD_VARIABLE}`,
      );
    }
    const log = getLogger(["pklock", "cluster"]);
    const onToken = (user: string) =>
      log.info("Authenticated with etcd as user {user}", { user });
    credentials = { user: auth.user, password, onToken };
  }
  // Deno takes a CA file with no certificate in it without a word.
  const read = async (file: string | undefined, setting: string) => {
    if (file === undefined) return undefined;
    const pem = await readSettingFile(file, `"cluster.tls.${setting}" file`);
    if (!/^-----BEGIN [A-Z ]+-----$/m.test(pem)) {
      throw new SettingsError(
        `The "cluster.tls.${setting}" file "${file}" holds nothing in PEM`,
      );
    }
    return pem;
  };
  try {
    return new EtcdClient(settings.endpoints, {
      credentials,
      tls: tls && {
        caCerts: tls.caFile === undefined
          ? undefined
          : [(await read(tls.caFile, "caFile"))!],
        cert: await read(tls.certFile, "certFile"),
        key: await read(tls.keyFile, "keyFile"),
      },
    });
  } catch (cause) {
    if (cause instanceof SettingsError) throw cause;
    throw new SettingsError(
      `Cannot use the etcd TLS settings: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/**
 * Takes this node's lease on etcd and lists the lock space.
 *
 * @throws {SettingsError} When etcd does not answer, or refuses the
 *   credentials or the certificate; the client is then closed.
 */
async function joinCluster(
  etcd: EtcdClient,
  settings: NonNullable<Settings["cluster"]>,
): Promise<ClusterLockSpace> {
  const log = getLogger(["pklock", "cluster"]);
  try {
    return await ClusterLockSpace.open(etcd, {
      ttlSeconds: settings.ttl,
      marginMs: settings.margin,
      prefix: settings.prefix,
      progressTimeoutMs: settings.progressTimeout,
      onLease: (state, detail) => {
        if (state === "lost") {
          log.error("Lost the node lease, closing its clients: {detail}", {
            detail,
          });
        } else log.warn("Serving again with a new lease: {detail}", { detail });
      },
    });
  } catch (cause) {
    etcd[Symbol.dispose]();
    const https = settings.endpoints.some((url) => url.startsWith("https:"));
    const hint = https && cause instanceof EtcdUnavailableError
      ? ` (over https: "cluster.tls.caFile" must name the CA that signed etcd's certificates, and with etcd's --client-cert-auth "certFile" and "keyFile" a client certificate it trusts)`
      : "";
    throw new SettingsError(
      `Cannot join the cluster on etcd ${settings.endpoints.join(",")}: ${
        (cause as Error).message
      }${hint}`,
      { cause },
    );
  }
}
