/**
 * Failures to reach or use a server, said for the person at the command line:
 * which flag or variable fixes them, instead of protocol codes or TLS
 * library text.
 *
 * @module
 */

import {
  ConnectionError,
  type RemoteError,
  RequestTimeoutError,
} from "../message/errors.ts";

/** How the server was reached. */
interface Target {
  /** One server, or several separated by commas (as `--host` gives them). */
  host: string;
  port: number;
  tls?: boolean;
  caFile?: string;
}

/** TLS library verdicts on a certificate, as people would say them. */
const CERTIFICATE_PROBLEMS: readonly [RegExp, string][] = [
  [
    /UnknownIssuer/,
    "its certificate is not signed by a CA this client trusts (name the CA with --ca-file or PKLOCK_CA_FILE)",
  ],
  [
    /NotValidForName/,
    "its certificate is not valid for this address (connect with --host set to a name or address the certificate lists)",
  ],
  [/Expired/, "its certificate has expired"],
  [/NotValidYet/, "its certificate is not valid yet (check the clocks)"],
  [/Revoked/, "its certificate has been revoked"],
];

/**
 * The servers `target` names, each with its port: `127.0.0.1:20934`, or
 * `one of 10.0.0.1:20934, [::1]:7000` for a list tried in turn.
 */
function serversOf(target: Target): string {
  const entries = target.host.split(",").map((entry) =>
    /^(\[[^\]]*\]|[^:]*):\d+$/.test(entry) ? entry : `${entry}:${target.port}`
  );
  return entries.length === 1 ? entries[0]! : `one of ${entries.join(", ")}`;
}

/**
 * What the socket or TLS library said: for several servers tried, what each
 * said, one after the other.
 */
function causeOf(error: Error): string {
  const { cause } = error;
  if (cause instanceof AggregateError) {
    return cause.errors.map((each: Error) => causeOf(each)).join("; ");
  }
  return (cause as Error | undefined)?.message ?? "";
}

/**
 * Describes a failed connection or request, with a hint at the fix.
 *
 * @param error What the client threw.
 * @param target How the server was reached.
 * @returns One line, without the `pklock: ` prefix.
 */
export function explain(
  error: ConnectionError | RemoteError | RequestTimeoutError,
  target: Target,
): string {
  const where = serversOf(target);
  if (
    error instanceof RequestTimeoutError ||
    /no answer within/.test(error.message)
  ) {
    return `${error.message} (is the server at ${where} stopped or overloaded? --connect-timeout sets the limit)`;
  }
  if (!(error instanceof ConnectionError)) {
    switch (error.code) {
      case "auth_required":
        return `The server at ${where} requires authentication: give its shared secret with --secret-file FILE or PKLOCK_SECRET`;
      case "auth_failed":
        return `Authentication failed at ${where}: the server refused the shared secret (check the file given with --secret-file, or PKLOCK_SECRET)`;
      case "unavailable":
        return `${error.message} (the cluster node at ${where} cannot use etcd now: retry later, or use another node)`;
      default:
        return error.message;
    }
  }
  const tls = target.tls === true || target.caFile !== undefined;
  const cause = causeOf(error);
  if (tls) {
    const problem = CERTIFICATE_PROBLEMS.find(([pattern]) =>
      pattern.test(cause)
    );
    if (problem !== undefined) {
      return `Cannot connect to ${where} over TLS: ${problem[1]}`;
    }
    if (/corrupt message|InvalidContentType|HandshakeFailure/.test(cause)) {
      return `Cannot connect to ${where} over TLS: the server does not speak TLS (is it a plain-TCP server? try without --tls)`;
    }
    if (/invalid peer certificate|tls|handshake/i.test(cause)) {
      return `Cannot connect to ${where} over TLS: the TLS handshake failed`;
    }
  } else if (/protocol_error/.test(error.message)) {
    return `Cannot talk to ${where}: its reply is not pklock's protocol (is the server using TLS? try --tls)`;
  }
  if (/refused/i.test(cause)) {
    return `${error.message} (is pklock serve running there? --host and --port, or PKLOCK_HOST and PKLOCK_PORT, say where)`;
  }
  return error.message;
}
