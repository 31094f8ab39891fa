// Drives `python -m cellbox serve` with the real vscode-jsonrpc client, the JSON-RPC library
// of VS Code's language clients: Content-Length framing over the child's stdio, requests,
// notifications, and cancellation through a CancellationToken (which sends $/cancelRequest).
//
// Usage: node client.js <python> <repo root>
// Prints one JSON report on stdout (the last line); tests/conformance/test_vscode_jsonrpc.py
// asserts on it. Exits 0 when the script ran to the end, 1 on any failure (with the error in
// the report), whatever the server answered: the Python test decides what is correct.

"use strict";

const { spawn } = require("child_process");
const rpc = require("vscode-jsonrpc/node");

const python = process.argv[2] || "python3";
const root = process.argv[3] || process.cwd();
const DEADLINE_MS = 15000;

const report = { steps: [], notifications: [] };
const stderr = [];
const child = spawn(python, ["-m", "cellbox", "serve"], {
  cwd: root,
  env: { ...process.env, PYTHONPATH: root + (process.env.PYTHONPATH ? ":" + process.env.PYTHONPATH : "") },
  stdio: ["pipe", "pipe", "pipe"],
});
child.stderr.on("data", (chunk) => stderr.push(chunk.toString()));
const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));

const connection = rpc.createMessageConnection(
  new rpc.StreamMessageReader(child.stdout),
  new rpc.StreamMessageWriter(child.stdin),
);

// Notifications, in arrival order; waiters are woken as they come.
const waiters = [];
connection.onNotification((method, params) => {
  report.notifications.push({ method, params });
  for (const w of waiters.splice(0)) {
    if (w.predicate()) w.resolve();
    else waiters.push(w);
  }
});
connection.onError((e) => report.steps.push({ step: "connectionError", error: String(e && e[0]) }));
connection.listen();

function waitFor(predicate, what) {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), DEADLINE_MS);
    waiters.push({ predicate, resolve: () => { clearTimeout(timer); resolve(); } });
  });
}

function outputText(stream) {
  return report.notifications
    .filter((n) => n.method === "session/output" && n.params.stream === stream)
    .map((n) => n.params.text)
    .join("");
}

async function step(name, fn) {
  const t0 = process.hrtime.bigint();
  try {
    const result = await fn();
    report.steps.push({ step: name, result, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    return result;
  } catch (e) {
    // a JSON-RPC error reply rejects with a ResponseError: keep its code
    report.steps.push({ step: name, error: { code: e.code, message: e.message, data: e.data } });
    return undefined;
  }
}

async function main() {
  await step("initialize", () =>
    connection.sendRequest("initialize", {
      processId: process.pid,
      clientInfo: { name: "vscode-jsonrpc conformance", version: "1" },
      rootUri: null,
      capabilities: {},
    }));
  await connection.sendNotification("initialized", {});
  const created = await step("session/create", () => connection.sendRequest("session/create", { name: "vscode" }));
  const session = created && created.session;

  report.notificationsBeforeEvalResult = -1;
  await step("session/eval", async () => {
    const result = await connection.sendRequest("session/eval", {
      session,
      code: "print('hello from vscode')\nimport sys\nsys.stderr.write('to stderr\\n')\ndata = {'alpha': 1, 'alpine': 2}\n40 + 2",
    });
    report.notificationsBeforeEvalResult = report.notifications.length;
    return result;
  });
  await step("session/complete", () =>
    connection.sendRequest("session/complete", { session, code: "data['al", cursor: 8 }));
  await step("session/inspect", () =>
    connection.sendRequest("session/inspect", { session, code: "len(data", cursor: 8 }));
  await step("session/isComplete", () =>
    connection.sendRequest("session/isComplete", { session, code: "for x in data:" }));
  await step("unknownSession", () =>
    connection.sendRequest("session/complete", { session: "no-such-session", code: "x", cursor: 1 }));

  // Cancel a long eval through vscode-jsonrpc's own CancellationToken.
  const source = new rpc.CancellationTokenSource();
  await step("cancelledEval", async () => {
    const pending = connection.sendRequest(
      "session/eval",
      { session, code: "print('spinning', flush=True)\nwhile True:\n    pass" },
      source.token,
    );
    await waitFor(() => outputText("stdout").includes("spinning"), "the long eval to start");
    source.cancel();
    return await pending;
  });
  await step("evalAfterCancel", () => connection.sendRequest("session/eval", { session, code: "data['alpha'] + 1" }));

  await step("shutdown", () => connection.sendRequest("shutdown"));
  await connection.sendNotification("exit");
  const status = await Promise.race([
    exited,
    new Promise((resolve) => setTimeout(() => resolve({ code: null, signal: "still running" }), DEADLINE_MS)),
  ]);
  report.exit = status;
}

const guard = setTimeout(() => {
  report.fatal = "the driver did not finish in time";
  finish(1);
}, 3 * DEADLINE_MS);

function finish(code) {
  clearTimeout(guard);
  report.stderr = stderr.join("").slice(-4000);
  try { connection.dispose(); } catch (e) { /* already closed */ }
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  process.stdout.write("\n" + JSON.stringify(report) + "\n", () => process.exit(code));
}

main().then(
  () => finish(0),
  (e) => {
    report.fatal = String(e && e.stack ? e.stack : e);
    finish(1);
  },
);
