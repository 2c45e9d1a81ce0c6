/**
 * The systemd unit `run` runs in, if any, and whether a signal `run` got came
 * from systemd stopping it with `KillMode=control-group` (systemd's default):
 * systemd then signals every process of the unit itself, the command
 * included, and `run` must not pass the signal on a second time. Deno tells
 * a signal's listener nothing of the sender, so `run` asks systemd: its unit
 * is the one its own cgroup is in (`/proc/self/cgroup`), and `systemctl show`
 * tells the unit's KillMode, its kill signal and whether it is stopping. A
 * signal sent to `run` alone while the unit runs (an operator's `kill`) is
 * still passed on. When systemd cannot be asked, `run` passes it on.
 *
 * @module
 */

import { signalNumber } from "./stop_signals.ts";

/** How long `systemctl show` may take before the signal is passed on. */
const ASK_TIMEOUT_MS = 2_000;

/** What `systemctl show` says of the unit. */
interface UnitState {
  killMode: string;
  killSignal: number;
  sendSighup: boolean;
  activeState: string;
}

/** The systemd service `run` runs in. */
export class SystemdUnit {
  /**
   * @param name The unit's name (`backup.service`).
   * @param user Whether it is a unit of a user's service manager.
   */
  constructor(readonly name: string, readonly user: boolean) {}

  /**
   * The unit this process runs in, when systemd started it as a service
   * (`INVOCATION_ID` is set) and its cgroup names one.
   *
   * @param cgroups The text of `/proc/self/cgroup`; read when absent.
   * @returns The unit, or `null`.
   */
  static find(cgroups?: string): SystemdUnit | null {
    if (!Deno.env.get("INVOCATION_ID")) return null;
    let text = cgroups;
    try {
      text ??= Deno.readTextFileSync("/proc/self/cgroup");
    } catch {
      return null;
    }
    return unitOf(text);
  }

  /**
   * Whether systemd sent `signal` to every process of the unit: it is
   * stopping the unit with `KillMode=control-group`, and `signal` is its
   * kill signal (or SIGHUP, with `SendSIGHUP=yes`).
   *
   * @param signal The signal `run` got.
   * @returns Whether the command got it from systemd too; `false` when
   *   systemd does not answer in time.
   */
  async signalledEveryProcess(signal: Deno.Signal): Promise<boolean> {
    const state = await this.#state();
    if (state === null) return false;
    if (state.killMode !== "control-group") return false;
    if (state.activeState !== "deactivating") return false;
    return signalNumber(signal) === state.killSignal ||
      (signal === "SIGHUP" && state.sendSighup);
  }

  async #state(): Promise<UnitState | null> {
    const properties = "KillMode,KillSignal,SendSIGHUP,ActiveState";
    const args = [
      ...(this.user ? ["--user"] : []),
      "show",
      `--property=${properties}`,
      "--",
      this.name,
    ];
    try {
      const { success, stdout } = await new Deno.Command("systemctl", {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "null",
        signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
      }).output();
      if (!success) return null;
      const shown = new Map<string, string>();
      for (const line of new TextDecoder().decode(stdout).split("\n")) {
        const at = line.indexOf("=");
        if (at > 0) shown.set(line.slice(0, at), line.slice(at + 1));
      }
      return {
        killMode: shown.get("KillMode") ?? "",
        killSignal: Number(shown.get("KillSignal")),
        sendSighup: shown.get("SendSIGHUP") === "yes",
        activeState: shown.get("ActiveState") ?? "",
      };
    } catch {
      return null;
    }
  }
}

/**
 * The unit a cgroup path names: its last `.service` or `.scope` segment, in
 * the hierarchy systemd keeps (`name=systemd` on cgroup v1, else v2's).
 *
 * @param cgroups The text of `/proc/<pid>/cgroup`.
 * @returns The unit, or `null`.
 */
export function unitOf(cgroups: string): SystemdUnit | null {
  const paths = new Map<string, string>();
  for (const line of cgroups.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    paths.set(line.slice(first + 1, second), line.slice(second + 1));
  }
  const path = paths.get("name=systemd") ?? paths.get("") ?? "";
  const segments = path.split("/");
  const at = segments.findLastIndex((s) => /\.(service|scope)$/.test(s));
  if (at < 0) return null;
  const user = segments.slice(0, at).some((s) => /^user@\d+\.service$/.test(s));
  return new SystemdUnit(segments[at]!, user);
}
