/**
 * The command `pklock run` runs, started so that it cannot outlive `run`:
 *
 * - `setpriv --pdeathsig KILL` (util-linux) sets the kernel's parent-death
 *   signal, so the command is killed when `run` dies, even by SIGKILL or the
 *   OOM killer. Linux ties that signal to the *thread* that forked the child;
 *   Deno forks from its main thread (clone3 with CLONE_VFORK, tid = pid, seen
 *   with strace), which lives exactly as long as the process.
 * - A shell guard then checks that its parent is still `run`: had `run` died
 *   before `setpriv` set the signal, the command would be an orphan, and it
 *   does not start.
 * - Off a terminal, `setsid` gives the command a session and process group of
 *   its own, so a signal sent to `run`'s group (systemd, `kill -- -PGID`, CI
 *   runners) reaches only `run`, which passes it on once, and losing the lock
 *   stops the whole command tree. On a terminal the command stays in the
 *   terminal's foreground job, so that the keyboard, stdin and job control
 *   work as without pklock.
 * - `env --default-signal=USR1` undoes pklock's own "SIGUSR1 ignored" (see
 *   inspector_signal.ts), which the command would otherwise inherit.
 *
 * `run` also lets the command inherit the lock's connection (see
 * inherited_connection.ts), so that the lock is released only once the
 * command has exited.
 *
 * @module
 */

/** The programs the wrapper needs, by name, with the package that has them. */
const TOOLS = {
  env: "coreutils",
  setpriv: "util-linux",
  setsid: "util-linux",
} as const;

/**
 * Runs as `sh -c GUARD pklock-run RUN_PID COMMAND ARGS...`: starts the command
 * only if `run` (RUN_PID) is still its parent, and says so when the command
 * is not found, as `run` did before it used a wrapper.
 */
const GUARD = '[ "$PPID" = "$1" ] || exit 125; shift; ' +
  'command -v "$1" >/dev/null 2>&1 || ' +
  '{ printf \'pklock: Cannot run "%s": command not found\\n\' "$1" >&2; ' +
  "exit 127; }; " +
  'exec "$@"';

/** The paths of {@linkcode TOOLS}. */
export type Tools = Record<keyof typeof TOOLS, string>;

/**
 * Finds the wrapper's programs in PATH.
 *
 * @returns Their paths, or the message to print when one is missing.
 */
export function findTools(): Tools | string {
  const dirs = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  const found: Partial<Tools> = {};
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    const path = dirs.map((dir) => `${dir}/${tool}`).find(isExecutable);
    if (path === undefined) {
      return `pklock run needs ${tool}(1), from the ${pkg} package, to tie the command's life to its own; it is not in PATH`;
    }
    found[tool as keyof Tools] = path;
  }
  return found as Tools;
}

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** How to start the command. */
export interface CommandOptions {
  /** The wrapper's programs, from {@linkcode findTools}. */
  tools: Tools;
  /** Give the command its own session and process group (off a terminal). */
  ownGroup: boolean;
  /** Variables added to the command's environment. */
  env: Record<string, string>;
}

/** The running command. */
export class CommandProcess {
  /** The command's process id (its process group's, with `ownGroup`). */
  readonly pid: number;
  /** Whether the command has a process group of its own. */
  readonly ownGroup: boolean;
  /** Resolves when the command has exited. */
  readonly status: Promise<Deno.CommandStatus>;

  /**
   * Starts the command.
   *
   * @param argv The command and its arguments.
   * @param options The wrapper's tools, the process group and environment.
   * @throws {Error} When the wrapper cannot be started.
   */
  constructor(argv: string[], options: CommandOptions) {
    const { tools, ownGroup } = options;
    const child = new Deno.Command(tools.env, {
      args: [
        "--default-signal=USR1",
        tools.setpriv,
        "--pdeathsig",
        "KILL",
        ...(ownGroup ? [tools.setsid] : []),
        "sh",
        "-c",
        GUARD,
        "pklock-run",
        String(Deno.pid),
        ...argv,
      ],
      env: options.env,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    this.pid = child.pid;
    this.ownGroup = ownGroup;
    this.status = child.status;
  }

  /**
   * Sends a signal to the command's whole process group when it has its own,
   * else to the command alone; does nothing once it has exited.
   *
   * @param signal The signal.
   */
  kill(signal: Deno.Signal): void {
    try {
      Deno.kill(this.ownGroup ? -this.pid : this.pid, signal);
    } catch {
      // Gone already.
    }
  }
}
