/**
 * The text after the options in `pklock run --help` and `pklock hold --help`:
 * how the command line is read, the exit codes, signals and environment.
 *
 * @module
 */

import { ExitCode } from "./exit_codes.ts";

/** The end of `pklock run --help`. */
export const RUN_HELP = `
Options may stand before NAME or between NAME and the command; the first word
after NAME that is not one of pklock's options (or its value) starts the
command, as "--" does, and nothing from there on is read as pklock's:
  pklock run job printf '[%s]\\n' a -p 27111 b   # the command gets -p 27111
  pklock run -n job -c 'backup.sh >> log'       # flock's spelling, as in cron
Durations: 30 or 30s, 500ms, 1.5m, 2h, 1d. Defaults from the environment:
PKLOCK_HOST, PKLOCK_PORT, PKLOCK_TLS=1, PKLOCK_CA_FILE, PKLOCK_SECRET_FILE (or
PKLOCK_SECRET), PKLOCK_LABEL, PKLOCK_CONNECT_TIMEOUT. --host (PKLOCK_HOST) may
list servers separated by commas, tried in turn until one answers, each within
--connect-timeout; entries without a port use --port:
  pklock run --host 10.0.0.1,10.0.0.2:7000,[fd00::3]:7000 job -- ./job.sh

The command gets PKLOCK_LOCK, PKLOCK_TOKEN (the fencing token to hand to the
resources the lock protects), PKLOCK_MODE, PKLOCK_HOST and PKLOCK_PORT (the
server reached, an IPv6 address in brackets; and PKLOCK_TLS, PKLOCK_CA_FILE
when used), so that a pklock it runs reaches the same server.
It never outlives the lock: it holds a copy of the lock's connection and dies
with run, even when run is killed -9 (the lock is free once it has exited), and
when the lock is lost its process group gets SIGTERM, then SIGKILL.

Exit codes: the command's own, or run dies of the signal the command died of;
${ExitCode.NotAcquired} (or -E) when the lock is not granted in time; ${ExitCode.Lost} when the lock is lost
while the command runs; ${ExitCode.Connection} when the server cannot be reached; 127 when the
command cannot be started. SIGTERM, SIGUSR2 (and SIGHUP, SIGINT, SIGQUIT off a
terminal, where the command has a process group of its own) are passed on to
the command once, except a stop signal systemd already sent to every process
of run's unit (KillMode=control-group, asked of systemctl); SIGUSR1 is ignored
(see docs/operations.md).`;

/** The end of `pklock hold --help`. */
export const HOLD_HELP = `
Prints the fencing token on stdout once granted, then holds the lock until its
standard input closes or it gets SIGINT, SIGTERM, SIGHUP or SIGQUIT. In a
script, as flock's "exec 9>file; flock 9" (bash):
  coproc LOCK { pklock hold nightly; }
  read -r token <&"\${LOCK[0]}"     # empty if the lock was not granted
  ...                              # the section, with "$token" as the fence
  exec {LOCK[1]}>&-; wait           # closes its stdin: released
Exit codes: 0 once released; ${ExitCode.NotAcquired} (or -E) when not granted in time; ${ExitCode.Lost} when
the lock was lost; ${ExitCode.Connection} when the server cannot be reached.`;
