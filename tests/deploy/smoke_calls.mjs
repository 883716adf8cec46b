// One real, authenticated call to each containerised service, from a client that only loads the
// .proto files (grpc-js from .cache/npm). Used by container_test.sh after continuum-seed loaded the
// demo clinic into scheduling. Each call reaches its handler with a valid JWT and succeeds; the
// session-record and messaging calls also make the service call scheduling (container to
// container, with the service token each one mints from the shared HS256 secret).
//
// Environment: CONTINUUM_NPM_MODULES (node_modules with @grpc/grpc-js, @grpc/proto-loader),
// PROTO_ROOT (the repo's protos/), SCHEDULING / SESSION_RECORD / MESSAGING (host:port),
// ADMIN_TOKEN, THERAPIST_TOKEN, CLIENT_TOKEN (demo-admin, tara, casey of clinic "demo").
import { createRequire } from "node:module";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`smoke_calls: ${name} is not set`);
  return v;
};
const require = createRequire(path.join(env("CONTINUUM_NPM_MODULES"), "noop.js"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const root = env("PROTO_ROOT");
const def = protoLoader.loadSync(
  [
    "continuum/scheduling/v1/scheduling_service.proto",
    "continuum/records/v1/session_record_service.proto",
    "continuum/messaging/v1/messaging_service.proto",
  ],
  { includeDirs: [root], keepCase: true, longs: String, enums: String, defaults: false },
);
const pkg = grpc.loadPackageDefinition(def).continuum;

function call(client, method, request, token) {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    client[method](request, md, { deadline: Date.now() + 10000 }, (err, resp) => {
      if (err) reject(new Error(`${method}: ${grpc.status[err.code]} ${err.details}`));
      else resolve(resp);
    });
  });
}

function check(cond, what) {
  if (!cond) throw new Error(`smoke_calls: ${what}`);
}

const insecure = grpc.credentials.createInsecure();
const scheduling = new pkg.scheduling.v1.SchedulingService(env("SCHEDULING"), insecure);
const records = new pkg.records.v1.SessionRecordService(env("SESSION_RECORD"), insecure);
const messaging = new pkg.messaging.v1.MessagingService(env("MESSAGING"), insecure);

try {
  // scheduling: the clinic continuum-seed created, read back by the clinic's admin.
  const clinic = await call(scheduling, "GetClinic", { name: "clinics/demo" }, env("ADMIN_TOKEN"));
  check(clinic.name === "clinics/demo" && clinic.time_zone === "Europe/Berlin",
    `GetClinic returned ${JSON.stringify(clinic)}`);
  console.log(`scheduling      GetClinic -> ${clinic.name} (${clinic.time_zone})`);

  // session-record: the therapist lists her client's records; the service asks scheduling for
  // the care team (that the therapist is on), answers, and audits the read.
  const list = await call(records, "ListSessionRecords",
    { parent: "clinics/demo", client: "people/casey" }, env("THERAPIST_TOKEN"));
  check(Array.isArray(list.session_records ?? []), `ListSessionRecords returned ${JSON.stringify(list)}`);
  // ...and the clinic admin finds that read in the audit log (written to the container's store).
  const audit = await call(records, "ListAuditEntries", { parent: "clinics/demo" }, env("ADMIN_TOKEN"));
  const entries = audit.audit_entries ?? [];
  check(entries.some((e) => JSON.stringify(e).includes("ListSessionRecords")),
    `ListAuditEntries has no ListSessionRecords entry: ${JSON.stringify(audit)}`);
  console.log(`session-record  ListSessionRecords -> ${(list.session_records ?? []).length} records; ` +
    `audit log ${entries.length} entr${entries.length === 1 ? "y" : "ies"}`);

  // messaging: the client's own conversation is created on first sight from the care team in
  // scheduling (tara + colin), so the list holds it.
  const convs = await call(messaging, "ListConversations", { parent: "clinics/demo" }, env("CLIENT_TOKEN"));
  const n = (convs.conversations ?? []).length;
  check(n >= 1, `ListConversations returned ${JSON.stringify(convs)}`);
  const members = (convs.conversations[0].members ?? []).map((m) => m.person).join(", ");
  console.log(`messaging       ListConversations -> ${n} conversation(s), members ${members}`);
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  process.exit(1);
}
