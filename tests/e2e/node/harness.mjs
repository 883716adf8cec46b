// Test plumbing for the Node client journey: find the npm modules and the protos, start a
// private redis-server and the Continuum binaries (127.0.0.1:0, SQLite in a temp dir, ready
// files), mint HS256 test tokens, call RPCs with deadlines and decode the rich error details
// (grpc-status-details-bin = google.rpc.Status). Nothing here links or generates C++ code: it is
// what a partner's Node program would do, plus the processes a test has to start itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../..');

// Same values as common/testing/harness.{h,cc} (kTestJwtSecret, TestToken).
export const TEST_JWT_SECRET = 'continuum-test-secret-0123456789abcdef';
export const JWT_ISSUER = 'continuum-dev';
export const JWT_AUDIENCE = 'continuum';

export const config = {
  binDir: process.env.CONTINUUM_BIN_DIR || path.join(repoRoot, 'build/bin'),
  protoRoot: process.env.CONTINUUM_PROTO_ROOT || path.join(repoRoot, 'protos'),
  googleapisRoot: process.env.CONTINUUM_GOOGLEAPIS_PROTO_ROOT || '/usr/share/gocode/src/github.com/gogo/googleapis',
  nodeModules: process.env.CONTINUUM_NPM_MODULES || path.join(repoRoot, '.cache/npm/node_modules'),
  callTimeoutMs: 30_000,
};

// ESM imports ignore NODE_PATH, so the npm packages are loaded with a require() rooted in the
// node_modules directory that tools/dev/deps.sh fills.
export function loadNpm() {
  const missing = ['@grpc/grpc-js', '@grpc/proto-loader'].filter(
    (m) => !fs.existsSync(path.join(config.nodeModules, m, 'package.json')));
  if (missing.length) {
    throw new Error(`npm modules ${missing.join(', ')} not found in ${config.nodeModules}; ` +
                    'run tools/test.sh (it installs them into .cache/npm) or set CONTINUUM_NPM_MODULES');
  }
  const require = createRequire(path.join(config.nodeModules, 'noop.js'));
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  // protobufjs exactly as proto-loader resolves it (proto-loader is built on it): used only
  // to decode google.rpc.Status and its details, which are not RPC messages.
  const protobuf = createRequire(require.resolve('@grpc/proto-loader'))('protobufjs');
  return { grpc, protoLoader, protobuf };
}

function protoFiles(root, sub) {
  const out = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.proto')) out.push(path.relative(root, p));
    }
  };
  walk(path.join(root, sub));
  return out.sort();
}

// Loads every continuum/**/*.proto plus google/rpc/{status,error_details}.proto.
export function loadContract({ grpc, protoLoader, protobuf }) {
  for (const [what, dir, probe] of [['proto root', config.protoRoot, 'continuum/common/v1/types.proto'],
                                    ['googleapis proto root', config.googleapisRoot, 'google/rpc/status.proto']]) {
    if (!fs.existsSync(path.join(dir, probe))) throw new Error(`${what} ${dir} has no ${probe}`);
  }
  const includeDirs = [config.protoRoot, config.googleapisRoot];
  const files = [...protoFiles(config.protoRoot, 'continuum'), 'google/rpc/status.proto', 'google/rpc/error_details.proto'];
  const definition = protoLoader.loadSync(files, {
    includeDirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition);

  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of includeDirs) {
      const p = path.join(dir, target);
      if (fs.existsSync(p)) return p;
    }
    return target;  // google/protobuf/*.proto: bundled with protobufjs
  };
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto',
                 'continuum/common/v1/errors.proto'], { keepCase: true });
  const types = {
    Status: root.lookupType('google.rpc.Status'),
    ErrorInfo: root.lookupType('google.rpc.ErrorInfo'),
    BadRequest: root.lookupType('google.rpc.BadRequest'),
    ErrorReason: root.lookupEnum('continuum.common.v1.ErrorReason'),
  };
  return { pkg, types, definition };
}

// ---------------------------------------------------------------------------- tokens

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// An HS256 JWT with the claims common/testing/harness.cc's TestToken puts in.
export function mintJwt({ sub, role, clinics, secret = TEST_JWT_SECRET, ttlSeconds = 3600 }) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'HS256', typ: 'JWT' };
  const claims = { iss: JWT_ISSUER, aud: JWT_AUDIENCE, sub, role, clinics, iat: now, exp: now + ttlSeconds };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = crypto.createHmac('sha256', secret).update(input).digest();
  return `${input}.${b64url(signature)}`;
}

// ---------------------------------------------------------------------------- calls

export function makeCaller(grpc) {
  const metadataFor = (token) => {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    return md;
  };
  // Unary call with a deadline; resolves the response or rejects with the grpc-js error.
  const call = (client, method, request, token) => new Promise((resolve, reject) => {
    assert.equal(typeof client[method], 'function', `no method ${method}`);
    client[method](request, metadataFor(token), { deadline: Date.now() + config.callTimeoutMs },
                   (err, res) => (err ? reject(err) : resolve(res)));
  });
  return { call, metadataFor };
}

// The google.rpc.Status carried in grpc-status-details-bin, with ErrorInfo and BadRequest
// unpacked from its details.
export function decodeStatus(types, err) {
  const raw = err?.metadata?.get('grpc-status-details-bin')?.[0];
  assert.ok(Buffer.isBuffer(raw), `no grpc-status-details-bin trailer on ${err?.code} ${err?.details}`);
  const status = types.Status.toObject(types.Status.decode(raw), { defaults: true });
  const out = { status, errorInfo: null, badRequest: null };
  for (const any of status.details) {
    if (any.type_url === 'type.googleapis.com/google.rpc.ErrorInfo') {
      out.errorInfo = types.ErrorInfo.toObject(types.ErrorInfo.decode(any.value), { defaults: true });
    } else if (any.type_url === 'type.googleapis.com/google.rpc.BadRequest') {
      out.badRequest = types.BadRequest.toObject(types.BadRequest.decode(any.value), { defaults: true });
    }
  }
  return out;
}

// Awaits a call that must fail with `code` (a grpc.status value) and, if given, ErrorInfo
// `reason`; returns the decoded details.
export async function expectError(grpc, types, promise, code, reason) {
  let err;
  try {
    const res = await promise;
    assert.fail(`expected ${grpc.status[code]}${reason ? ` / ${reason}` : ''}, got a response: ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    err = e;
  }
  assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
  const decoded = decodeStatus(types, err);
  assert.equal(decoded.status.code, code, 'google.rpc.Status.code matches the gRPC status');
  assert.ok(decoded.errorInfo, 'ErrorInfo present in the status details');
  assert.equal(decoded.errorInfo.domain, 'continuum.health');
  if (reason) {
    assert.equal(decoded.errorInfo.reason, reason, `reason (message: ${err.details})`);
    assert.ok(types.ErrorReason.values[`ERROR_REASON_${reason}`] !== undefined,
              `${reason} is an ErrorReason of the contract`);
  }
  return { err, ...decoded };
}

// ---------------------------------------------------------------------------- processes

const children = [];  // running: { name, proc, logFile, exited: Promise }
const launched = [];  // every child ever started, for logs

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check` (async, returns truthy when ready) every 20 ms until `timeoutMs`. For the
// readiness of external processes only, never to order test steps.
async function pollUntil(what, check, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
    await delay(20);
  }
}

function launch(name, argv, logFile) {
  const log = fs.openSync(logFile, 'a');
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = { name, proc, logFile, exitCode: undefined };
  child.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { child.exitCode = code ?? signal; resolve(); });
    proc.on('error', (e) => { child.exitCode = `spawn error: ${e.message}`; resolve(); });
  });
  children.push(child);
  launched.push(child);
  return child;
}

function redisAnswers(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
  });
}

export async function startRedis(dir) {
  let last;
  for (let attempt = 0; attempt < 5; ++attempt) {  // a free port can be taken meanwhile
    const port = await freePort();
    const child = launch('redis', ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
                                   '--save', '', '--appendonly', 'no'], path.join(dir, `redis-${port}.log`));
    try {
      await pollUntil('redis-server', async () => {
        if (child.exitCode !== undefined) throw new Error(`redis-server exited (${child.exitCode})`);
        return redisAnswers(port);
      }, 10_000);
      return { address: `127.0.0.1:${port}`, child };
    } catch (e) {
      last = e;
      await stopChild(child);
    }
  }
  throw last;
}

// Starts build/bin/<binary> on 127.0.0.1:0 and returns the bound address from its ready file.
export async function startService(binary, args, dir) {
  const exe = path.join(config.binDir, binary);
  if (!fs.existsSync(exe)) throw new Error(`${exe} not found: build the tree first (CONTINUUM_BIN_DIR=${config.binDir})`);
  const ready = path.join(dir, `${binary}.ready`);
  const child = launch(binary, [exe, '--listen-address=127.0.0.1:0', '--metrics-address=127.0.0.1:0',
                                `--ready-file=${ready}`, ...args], path.join(dir, `${binary}.log`));
  await pollUntil(binary, () => {
    if (child.exitCode !== undefined) {
      throw new Error(`${binary} exited (${child.exitCode}) before it was ready:\n${tail(child.logFile)}`);
    }
    return fs.existsSync(ready);  // written to a temp file and renamed: complete when it exists
  }, 60_000);
  const fields = Object.fromEntries(fs.readFileSync(ready, 'utf8').split('\n').filter(Boolean)
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  assert.match(fields.grpc ?? '', /^127\.0\.0\.1:\d+$/, `${binary} ready file has grpc=<address>`);
  return { address: fields.grpc, metricsPort: Number(fields.metrics), child };
}

export function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function stopChild(child, graceMs = 15_000) {
  if (child.exitCode === undefined) {
    child.proc.kill('SIGTERM');
    const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
    await child.exited;
    clearTimeout(timer);
  }
  const i = children.indexOf(child);
  if (i >= 0) children.splice(i, 1);
}

// SIGTERM every child and wait: the services together (each drains for a moment), then redis.
export async function stopAll() {
  await Promise.all(children.filter((c) => c.name !== 'redis').map((c) => stopChild(c)));
  await Promise.all(children.map((c) => stopChild(c)));
}

export function dumpLogs(stream = process.stderr) {
  for (const c of launched) stream.write(`---- ${c.name} log (${c.logFile}) ----\n${tail(c.logFile)}\n`);
}

// Last resort if the process exits without stopAll (exit handlers must be synchronous).
process.on('exit', () => {
  for (const c of children) if (c.exitCode === undefined) c.proc.kill('SIGKILL');
});

export function makeTempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'continuum-node-e2e-'));
}
