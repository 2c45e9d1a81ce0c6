// On a terminal, the command of `pklock run` stays in the terminal's
// foreground job: it reads the terminal, and Ctrl-C reaches it once. A real
// pseudo-terminal from script(1), as a person's shell would give.
import assert from "node:assert/strict";
import { deadline, MAIN, spawnServer } from "./helpers.ts";

/** `pklock run` under script(1), with the terminal's keyboard as `type`. */
function onTerminal(args: string[]) {
  const command = [Deno.execPath(), "run", "-A", MAIN, ...args]
    .map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qefc", command, "/dev/null"],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const keyboard = child.stdin.getWriter();
  let screen = "";
  return {
    type: (text: string) => keyboard.write(new TextEncoder().encode(text)),
    async waitFor(pattern: RegExp): Promise<string> {
      while (!pattern.test(screen)) {
        const { value, done } = await deadline(
          reader.read(),
          30_000,
          `${pattern}`,
        );
        if (done) throw new Error(`Ended before ${pattern}: ${screen}`);
        screen += value;
      }
      return screen;
    },
    status: child.status,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await child.status;
      await reader.cancel().catch(() => {});
      await keyboard.close().catch(() => {});
    },
  };
}

Deno.test("on a terminal, the command reads the keyboard from the foreground job", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using terminal = onTerminal([
    "run",
    "tty",
    "-p",
    String(port),
    "--",
    "sh",
    "-c",
    'echo "groups $(ps -o pgid= -p $$) $(ps -o tpgid= -p $$)"; ' +
    'read line; echo "got $line"',
  ]);
  const screen = await terminal.waitFor(/groups +(\d+) +(\d+)/);
  const [, pgid, foreground] = /groups +(\d+) +(\d+)/.exec(screen)!;
  assert.equal(pgid, foreground, "the command is in the foreground group");
  await terminal.type("hello\r");
  await terminal.waitFor(/got hello/);
  assert.equal((await terminal.status).code, 0);
});

Deno.test("on a terminal, Ctrl-C reaches the command once", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using terminal = onTerminal([
    "run",
    "tty",
    "-p",
    String(port),
    "--",
    "sh",
    "-c",
    "n=0; trap 'n=$((n+1)); echo \"INT $n\"' INT; echo ready; " +
    'read line; echo "count $n"; trap - INT; kill -INT $$',
  ]);
  await terminal.waitFor(/ready/);
  await terminal.type("\x03");
  await terminal.waitFor(/INT 1/);
  await terminal.type("done\r");
  const screen = await terminal.waitFor(/count \d+/);
  assert.match(screen, /count 1/);
  // script(1) -e exits as pklock did: killed by SIGINT, 128 + 2.
  assert.equal((await terminal.status).code, 130);
});

/**
 * The line `pklock serve` logs at start-up on a terminal (its request
 * budget), with `NO_COLOR` as given.
 */
async function serveLogLine(noColor: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-test-" });
  const command = [
    Deno.execPath(),
    "run",
    "-A",
    MAIN,
    "serve",
    "--port",
    "0",
    "--state-file",
    `${dir}/state.json`,
  ].map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(" ");
  // The shell says its pid, then becomes the server: killing script(1) alone
  // would leave the server running (it ignores the hang-up).
  const child = new Deno.Command("script", {
    args: ["-qefc", `echo "pid $$"; exec ${command}`, "/dev/null"],
    env: { NO_COLOR: noColor },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let screen = "";
  try {
    let line: string | undefined;
    while (
      (line = screen.split("\n").find((l) => l.includes("Budget"))) ===
        undefined
    ) {
      const { value, done } = await deadline(
        reader.read(),
        30_000,
        "the log line",
      );
      if (done) throw new Error(`Ended before the log line: ${screen}`);
      screen += value;
    }
    return line;
  } finally {
    const pid = screen.match(/pid (\d+)/)?.[1];
    if (pid !== undefined) Deno.kill(Number(pid), "SIGKILL");
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel().catch(() => {});
    await child.stdin.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

const ESCAPE = "\x1b[";

Deno.test("on a terminal, serve colours its log lines unless NO_COLOR is set", async () => {
  assert.ok((await serveLogLine("")).includes(ESCAPE));
  const plain = await serveLogLine("1");
  assert.ok(!plain.includes(ESCAPE), JSON.stringify(plain));
});
