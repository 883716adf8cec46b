#!/usr/bin/env node
// The KAP journey's key steps from a Node client that only has the .proto files: proof that the
// gRPC contract works for a partner who never links Continuum's C++.
//
// Starts its own redis-server and the three services (127.0.0.1:0, SQLite in a temp dir), mints
// HS256 test tokens (in tests we are the identity provider), then: clinic, people, care team,
// program; consultation booked and fulfilled; a medicine session refused before that
// (CONSULTATION_NOT_FULFILLED, decoded from grpc-status-details-bin); dose plan; supervised
// medicine session booked; session record from safety checklist through dose to signed note;
// a message from the therapist delivered live on the client's Subscribe stream; bad input
// (INVALID_ARGUMENT + BadRequest); no / forged token (UNAUTHENTICATED).
//
// Environment (set by CTest; defaults fit a checkout built in build/): CONTINUUM_BIN_DIR,
// CONTINUUM_PROTO_ROOT, CONTINUUM_GOOGLEAPIS_PROTO_ROOT, CONTINUUM_NPM_MODULES.
// Prints one line per step; exits non-zero on any failure.
import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
  config, decodeStatus, dumpLogs, expectError, loadContract, loadNpm, makeCaller, makeTempDir, mintJwt,
  startRedis, startService, stopAll, TEST_JWT_SECRET,
} from './harness.mjs';

const TOTAL_TIMEOUT_MS = 120_000;
const CLINIC = 'kap';

let stepNo = 0;
let over = false;  // set when the run ends early (failure, deadline, signal): silence stragglers
const t0 = Date.now();
function ok(text) {
  if (over) return;
  stepNo += 1;
  console.log(`ok ${String(stepNo).padStart(2)} - ${text} (${((Date.now() - t0) / 1000).toFixed(2)}s)`);
}
// A documented output the journey does not depend on: a wrong value is reported (and fails
// the run at the end) without hiding whether the remaining steps work.
const contractViolations = [];
class ContractError extends Error {}
function contract(condition, text) {
  if (over) return;
  stepNo += 1;
  if (condition) {
    console.log(`ok ${String(stepNo).padStart(2)} - ${text.replace(/; got .*$/, '')} (${((Date.now() - t0) / 1000).toFixed(2)}s)`);
  } else {
    contractViolations.push(text);
    console.log(`not ok ${String(stepNo).padStart(2)} - CONTRACT: ${text}`);
  }
}

const ts = (ms) => ({ seconds: String(Math.floor(ms / 1000)), nanos: 0 });
const msOf = (t) => Number(t.seconds) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

async function journey(dir) {
  // ---- the contract, from .proto files only
  const npm = loadNpm();
  const { grpc } = npm;
  const { pkg, types } = loadContract(npm);
  const { SchedulingService } = pkg.continuum.scheduling.v1;
  const { SessionRecordService } = pkg.continuum.records.v1;
  const { MessagingService } = pkg.continuum.messaging.v1;
  for (const svc of [SchedulingService, SessionRecordService, MessagingService]) {
    assert.equal(typeof svc, 'function', 'service constructor from proto-loader');
  }
  assert.ok(SchedulingService.service.BookAppointment.path === '/continuum.scheduling.v1.SchedulingService/BookAppointment');
  assert.equal(MessagingService.service.Subscribe.responseStream, true, 'Subscribe is server-streaming');
  ok(`loaded the contract from ${config.protoRoot} (+ google.rpc from ${config.googleapisRoot})`);

  // ---- the platform: redis + scheduling + session-record + messaging
  const redis = await startRedis(dir);
  const secret = `--jwt-hs256-secret=${TEST_JWT_SECRET}`;
  const sched = await startService('continuum-scheduling',
    [`--database-url=sqlite:${dir}/scheduling.db`, `--redis-address=${redis.address}`, secret], dir);
  const [rec, msg] = await Promise.all([
    startService('continuum-session-record', [`--database-url=sqlite:${dir}/records.db`,
      `--redis-address=${redis.address}`, `--scheduling-address=${sched.address}`, secret], dir),
    startService('continuum-messaging', [`--database-url=sqlite:${dir}/messaging.db`,
      `--redis-address=${redis.address}`, `--scheduling-address=${sched.address}`, secret], dir),
  ]);
  ok(`started redis ${redis.address}, scheduling ${sched.address}, session-record ${rec.address}, messaging ${msg.address}`);

  const insecure = grpc.credentials.createInsecure();
  const S = new SchedulingService(sched.address, insecure);
  const R = new SessionRecordService(rec.address, insecure);
  const M = new MessagingService(msg.address, insecure);
  const clients = [S, R, M];
  const { call, metadataFor } = makeCaller(grpc);
  const fails = (promise, code, reason) => expectError(grpc, types, promise, code, reason);

  // ---- tokens: the same claims as common/testing/harness.cc's TestToken
  const tok = {
    ops: mintJwt({ sub: 'ops', role: 'service', clinics: ['*'] }),
    admin: mintJwt({ sub: 'people/boss', role: 'admin', clinics: [CLINIC] }),
    therapist: mintJwt({ sub: 'people/ther', role: 'therapist', clinics: [CLINIC] }),
    clinician: mintJwt({ sub: 'people/clin', role: 'clinician', clinics: [CLINIC] }),
    client: mintJwt({ sub: 'people/casey', role: 'client', clinics: [CLINIC] }),
  };

  try {
    // ---- clinic (CreateClinic is for service principals: platform operators)
    const clinic = await call(S, 'CreateClinic', {
      clinic_id: CLINIC,
      clinic: {
        display_name: 'KAP', time_zone: 'Europe/Berlin',
        rooms: [{ room_id: 'room-1', display_name: 'Room 1', supports_medicine_sessions: true }],
        policy: { minimum_notice: { seconds: 60 }, supervised_observation_period: { seconds: 2 } },
      },
      request_id: 'node-clinic',
    }, tok.ops);
    assert.equal(clinic.name, 'clinics/kap');
    assert.equal(clinic.time_zone, 'Europe/Berlin');
    assert.equal(clinic.policy.supervised_observation_period.seconds, '2');
    assert.deepEqual(clinic.rooms.map((r) => r.room_id), ['room-1']);
    assert.ok(clinic.etag, 'etag set');
    const again = await call(S, 'CreateClinic', {
      clinic_id: CLINIC,
      clinic: {
        display_name: 'KAP', time_zone: 'Europe/Berlin',
        rooms: [{ room_id: 'room-1', display_name: 'Room 1', supports_medicine_sessions: true }],
        policy: { minimum_notice: { seconds: 60 }, supervised_observation_period: { seconds: 2 } },
      },
      request_id: 'node-clinic',
    }, tok.ops);
    assert.deepEqual(again, clinic, 'a retry with the same request_id returns the first result');
    ok('CreateClinic clinics/kap (Europe/Berlin, room-1, 2 s observation); idempotent retry returns the same clinic');

    // ---- people (admin)
    const people = { ther: 'ROLE_THERAPIST', clin: 'ROLE_CLINICIAN', casey: 'ROLE_CLIENT' };
    for (const [id, role] of Object.entries(people)) {
      const p = await call(S, 'CreatePerson', {
        person_id: id,
        person: { display_name: id[0].toUpperCase() + id.slice(1), memberships: [{ clinic: 'clinics/kap', role }] },
        request_id: `node-person-${id}`,
      }, tok.admin);
      assert.equal(p.name, `people/${id}`);
      assert.deepEqual(p.memberships.map((m) => [m.clinic, m.role]), [['clinics/kap', role]]);
    }
    ok('CreatePerson people/ther (therapist), people/clin (clinician), people/casey (client) as admin');

    for (const provider of ['ther', 'clin']) {
      const a = await call(S, 'UpdateAvailability', {
        availability: {
          name: `clinics/kap/providers/${provider}/availability`,
          weekly_hours: [1, 2, 3, 4, 5, 6, 7].map((d) => ({
            day_of_week: d, hours: { start: { hours: 0 }, end: { hours: 24 } },
          })),
        },
        update_mask: { paths: ['weekly_hours'] },
        request_id: `node-hours-${provider}`,
      }, tok.admin);
      assert.equal(a.weekly_hours.length, 7);
      assert.equal(a.weekly_hours[0].day_of_week, 'DAY_OF_WEEK_MONDAY', 'enums come back as names');
    }
    ok('UpdateAvailability: ther and clin available 00:00-24:00 every day');

    // ---- care team + program (admin)
    const team = await call(S, 'UpdateCareTeam', {
      care_team: { name: 'clinics/kap/careTeams/casey', members: [{ person: 'people/ther' }, { person: 'people/clin' }] },
      update_mask: { paths: ['members'] },
      allow_missing: true,
      request_id: 'node-team',
    }, tok.admin);
    assert.equal(team.client, 'people/casey');
    assert.deepEqual(team.members.map((m) => [m.person, m.role]).sort(),
                     [['people/clin', 'ROLE_CLINICIAN'], ['people/ther', 'ROLE_THERAPIST']]);
    ok('UpdateCareTeam clinics/kap/careTeams/casey = ther + clin (roles filled in from memberships)');

    const program = await call(S, 'CreateProgram', {
      parent: 'clinics/kap', program: { client: 'people/casey', display_name: 'KAP course' }, request_id: 'node-program',
    }, tok.admin);
    assert.match(program.name, /^clinics\/kap\/programs\/[A-Za-z0-9_-]+$/);
    assert.equal(program.state, 'STATE_ACTIVE');
    assert.equal(program.client, 'people/casey');
    ok(`CreateProgram ${program.name}: ACTIVE`);

    // ---- consultation: booked, then a medicine session refused, then fulfilled
    const start = Math.floor((Date.now() + 2 * 3600_000) / 60_000) * 60_000;  // whole minutes
    const book = (kind, at, hours, requestId, token = tok.admin, extra = {}) => call(S, 'BookAppointment', {
      parent: 'clinics/kap',
      appointment: { kind, program: program.name, provider: 'people/ther', start_time: ts(at), end_time: ts(at + hours * 3600_000), ...extra },
      request_id: requestId,
    }, token);
    const consult = (await book('APPOINTMENT_KIND_CONSULTATION', start, 1, 'node-consult')).appointment;
    assert.equal(consult.state, 'STATE_BOOKED');
    assert.equal(consult.client, 'people/casey');
    assert.equal(msOf(consult.start_time), start);
    assert.equal(consult.local_start.time_zone, 'Europe/Berlin');
    ok(`BookAppointment consultation ${consult.name}: BOOKED at ${new Date(start).toISOString()}`);

    const medicineStart = start + 24 * 3600_000;
    const refused = await fails(book('APPOINTMENT_KIND_MEDICINE_SUPERVISED', medicineStart, 3, 'node-medicine-early'),
                                grpc.status.FAILED_PRECONDITION, 'CONSULTATION_NOT_FULFILLED');
    assert.ok(refused.err.details.length > 0, 'a human-readable message as well');
    ok(`BookAppointment medicine session before the consultation is fulfilled: FAILED_PRECONDITION, ErrorInfo ${refused.errorInfo.domain}/${refused.errorInfo.reason}`);

    for (const state of ['STATE_CHECKED_IN', 'STATE_FULFILLED']) {
      const a = await call(S, 'UpdateAppointmentState', { name: consult.name, state, request_id: `node-consult-${state}` }, tok.admin);
      assert.equal(a.state, state);
    }
    ok('UpdateAppointmentState consultation BOOKED -> CHECKED_IN -> FULFILLED');
    const afterConsult = await call(S, 'GetProgram', { name: program.name }, tok.admin);
    contract(afterConsult.progress?.consultation_fulfilled_time,
             'GetProgram after the consultation is FULFILLED: progress.consultation_fulfilled_time is set ' +
             `(Program.progress is "derived from its appointments"); got progress=${JSON.stringify(afterConsult.progress)}`);

    // ---- dose plan (only a clinician on the care team may set it)
    const planRequest = {
      name: program.name,
      dose_plan: { route: 'DOSE_ROUTE_INTRAMUSCULAR', min_dose_mg: 20, max_dose_mg: 60, max_sessions: 6 },
      request_id: 'node-plan',
    };
    await fails(call(S, 'SetDosePlan', planRequest, tok.therapist), grpc.status.PERMISSION_DENIED, 'PERMISSION_DENIED_ROLE');
    const planned = await call(S, 'SetDosePlan', planRequest, tok.clinician);
    assert.equal(planned.dose_plan.route, 'DOSE_ROUTE_INTRAMUSCULAR');
    assert.equal(planned.dose_plan.min_dose_mg, 20);
    assert.equal(planned.dose_plan.max_dose_mg, 60);
    assert.equal(planned.dose_plan.clinician, 'people/clin');
    ok('SetDosePlan IM 20-60 mg x6: refused for the therapist (PERMISSION_DENIED_ROLE), set by the clinician');

    // ---- supervised medicine session
    const booked = await book('APPOINTMENT_KIND_MEDICINE_SUPERVISED', medicineStart, 3, 'node-medicine');
    const medicine = booked.appointment;
    assert.equal(medicine.state, 'STATE_BOOKED');
    assert.equal(medicine.setting, 'CARE_SETTING_IN_CLINIC');
    assert.equal(medicine.room, 'room-1', 'an IN_CLINIC supervised session gets a medicine room');
    ok(`BookAppointment supervised medicine session ${medicine.name}: BOOKED, IN_CLINIC, room-1`);
    const afterBooking = await call(S, 'GetProgram', { name: program.name }, tok.admin);
    contract(afterBooking.progress?.medicine_sessions_counted === 1,
             'GetProgram after booking the medicine session: progress.medicine_sessions_counted = 1 ' +
             `(booked sessions count against the dose plan); got progress=${JSON.stringify(afterBooking.progress)}`);

    const getAppointmentState = async () => (await call(S, 'GetAppointment', { name: medicine.name }, tok.admin)).state;

    // ---- session record: safety gate, dose, observation, note, signature
    let record = await call(R, 'CreateSessionRecord', {
      parent: 'clinics/kap', session_record: { appointment: medicine.name }, request_id: 'node-record',
    }, tok.therapist);
    assert.equal(record.appointment, medicine.name);
    assert.equal(record.state, 'STATE_DRAFT');
    assert.equal(record.client, 'people/casey');
    const name = record.name;
    ok(`CreateSessionRecord ${name}: DRAFT`);

    const gate = await fails(call(R, 'StartSession', { name, request_id: 'node-start-1' }, tok.therapist),
                             grpc.status.FAILED_PRECONDITION, 'CHECKLIST_FAILED');
    assert.ok(gate.errorInfo.metadata.failing_items, 'metadata lists the failing items');
    ok(`StartSession without a checklist: FAILED_PRECONDITION CHECKLIST_FAILED (failing_items=${gate.errorInfo.metadata.failing_items})`);

    const checked = await call(R, 'UpdateChecklist', {
      name,
      items: [
        { kind: 'KIND_TRANSPORTATION_ARRANGED', confirmed: true },
        { kind: 'KIND_CONSENT_ACTIVE', confirmed: true },
        { kind: 'KIND_BLOOD_PRESSURE', systolic_mmhg: 122, diastolic_mmhg: 78 },
        { kind: 'KIND_DOSE_WITHIN_PLAN', planned_route: 'DOSE_ROUTE_INTRAMUSCULAR', planned_dose_mg: 40 },
      ],
      request_id: 'node-checklist',
    }, tok.therapist);
    assert.equal(checked.checklist.passed, true, JSON.stringify(checked.checklist));
    for (const item of checked.checklist.items.filter((i) => i.required)) assert.equal(item.status, 'STATUS_PASSED', item.kind);
    ok('UpdateChecklist transport, consent, BP 122/78, planned 40 mg IM: checklist passed');

    record = await call(R, 'StartSession', { name, request_id: 'node-start-2' }, tok.therapist);
    assert.equal(record.state, 'STATE_IN_PROGRESS');
    assert.equal(await getAppointmentState(), 'STATE_CHECKED_IN', 'session-record moved the appointment in scheduling');
    ok('StartSession: IN_PROGRESS; scheduling shows the appointment CHECKED_IN');

    await fails(call(R, 'StartDoseAdministration', {
      name, route: 'DOSE_ROUTE_INTRAMUSCULAR', dose_mg: 80, request_id: 'node-dose-80',
    }, tok.therapist), grpc.status.FAILED_PRECONDITION, 'DOSE_OUTSIDE_PLAN');
    record = await call(R, 'StartDoseAdministration', {
      name, route: 'DOSE_ROUTE_INTRAMUSCULAR', dose_mg: 40, request_id: 'node-dose-40',
    }, tok.therapist);
    const dose = record.dose_administrations.at(-1);
    assert.equal(dose.dose_mg, 40);
    assert.equal(dose.within_plan, true);
    assert.equal(dose.administered_by, 'people/ther');
    record = await call(R, 'StopDoseAdministration', {
      name, administration_id: dose.administration_id, request_id: 'node-dose-stop',
    }, tok.therapist);
    assert.ok(record.dose_administrations.at(-1).stop_time, 'stopped');
    assert.ok(record.earliest_complete_time, 'observation period set');
    ok(`StartDoseAdministration 80 mg refused (DOSE_OUTSIDE_PLAN); 40 mg IM recorded and stopped (${dose.administration_id})`);

    const earliest = msOf(record.earliest_complete_time);
    assert.ok(earliest >= msOf(record.dose_administrations.at(-1).stop_time) + 2000, 'the clinic\'s 2 s observation period');
    // (Skipped only if this machine took > 1.5 s since the dose stopped: no time left to check.)
    const checkedEarly = Date.now() < earliest - 500;
    if (checkedEarly) {
      await fails(call(R, 'CompleteSession', { name, request_id: 'node-complete-early' }, tok.therapist),
                  grpc.status.FAILED_PRECONDITION, 'OBSERVATION_PERIOD_NOT_ELAPSED');
    }
    // Wait for the instant the server named (the clinic's 2 s observation period), then
    // complete; a retry only covers clock rounding at that instant.
    await delay(Math.max(0, earliest - Date.now()) + 50);
    for (let attempt = 0; ; ++attempt) {
      try {
        record = await call(R, 'CompleteSession', { name, request_id: `node-complete-${attempt}` }, tok.therapist);
        break;
      } catch (e) {
        const reason = e.metadata ? decodeStatus(types, e).errorInfo?.reason : undefined;
        if (reason !== 'OBSERVATION_PERIOD_NOT_ELAPSED' || attempt >= 20) throw e;
        await delay(100);
      }
    }
    assert.equal(record.state, 'STATE_COMPLETED');
    assert.ok(msOf(record.complete_time) >= earliest);
    assert.equal(await getAppointmentState(), 'STATE_FULFILLED', 'CompleteSession fulfils the appointment');
    ok(`CompleteSession ${checkedEarly ? 'refused during observation (OBSERVATION_PERIOD_NOT_ELAPSED), then ' : ''}` +
       'COMPLETED once earliest_complete_time passed; appointment FULFILLED');
    const afterSession = await call(S, 'GetProgram', { name: program.name }, tok.admin);
    contract(afterSession.progress?.supervised_sessions_fulfilled === 1 && afterSession.progress?.last_medicine_end_time,
             'GetProgram after the medicine session is FULFILLED: progress.supervised_sessions_fulfilled = 1 and ' +
             `last_medicine_end_time set; got progress=${JSON.stringify(afterSession.progress)}`);

    await fails(call(R, 'SignSessionRecord', { name, request_id: 'node-sign-early' }, tok.clinician),
                grpc.status.FAILED_PRECONDITION, 'NOTE_REQUIRED');
    record = await call(R, 'UpdateNote', {
      name, note: { kind: 'KIND_SESSION', text: 'Grounded, reflective. Integration themes: grief, openness.' },
      request_id: 'node-note',
    }, tok.therapist);
    assert.equal(record.note.author, 'people/ther');
    record = await call(R, 'SignSessionRecord', { name, request_id: 'node-sign' }, tok.clinician);
    assert.equal(record.state, 'STATE_SIGNED');
    assert.equal(record.signature.signer, 'people/clin');
    assert.equal(record.note.text, 'Grounded, reflective. Integration themes: grief, openness.');
    await fails(call(R, 'UpdateNote', { name, note: { kind: 'KIND_SESSION', text: 'edit' }, request_id: 'node-note-2' }, tok.therapist),
                grpc.status.FAILED_PRECONDITION, 'RECORD_LOCKED');
    ok(`UpdateNote + SignSessionRecord (clinician): SIGNED v${record.version}; unsigned note refused (NOTE_REQUIRED), signed record locked (RECORD_LOCKED)`);

    // ---- messaging: the client's live stream receives the therapist's message
    const conversation = 'clinics/kap/conversations/client-casey';
    const stream = M.Subscribe({ cursor: '' }, metadataFor(tok.client), { deadline: Date.now() + 60_000 });
    const deliveries = [];
    const waiters = [];
    let streamError = null;
    const wake = () => { for (const w of waiters.splice(0)) w(); };
    stream.on('data', (d) => { deliveries.push(d); wake(); });
    stream.on('error', (e) => { streamError = e; wake(); });
    stream.on('end', wake);
    const nextMatching = async (pred, what, timeoutMs = 20_000) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const i = deliveries.findIndex(pred);
        if (i >= 0) return deliveries.splice(i, 1)[0];
        if (streamError) throw new Error(`Subscribe failed while waiting for ${what}: ${streamError.code} ${streamError.details}`);
        const left = end - Date.now();
        if (left <= 0) throw new Error(`no ${what} on the Subscribe stream within ${timeoutMs} ms (got ${JSON.stringify(deliveries)})`);
        await new Promise((r) => { const t = setTimeout(r, left); waiters.push(() => { clearTimeout(t); r(); }); });
      }
    };
    try {
      const live = await nextMatching((d) => d.item === 'replay_complete', 'replay_complete');
      assert.ok(live.cursor !== undefined);
      ok('Subscribe as the client (empty cursor): stream open, ReplayComplete received, now live');

      const sent = await call(M, 'SendMessage', {
        parent: conversation, message_id: 'node-msg-1', message: { text: 'How are you feeling after today?' },
      }, tok.therapist);
      assert.equal(sent.sender, 'people/ther');
      assert.ok(Number(sent.sequence) >= 1);
      assert.ok(sent.name.startsWith(`${conversation}/messages/`), sent.name);
      const got = await nextMatching((d) => d.item === 'message' && d.message.name === sent.name, `message ${sent.name}`);
      assert.equal(got.message.text, 'How are you feeling after today?');
      assert.equal(got.message.sender, 'people/ther');
      assert.equal(got.message.sequence, sent.sequence);
      assert.ok(got.cursor && got.cursor !== live.cursor, 'every delivery carries a new cursor to resume from');
      ok(`SendMessage from the therapist (${sent.name}) delivered live on the client's stream`);
    } finally {
      stream.cancel();
    }

    // ---- bad input: INVALID_ARGUMENT with a BadRequest field violation
    const bad = await fails(book('APPOINTMENT_KIND_CONSULTATION', start + 3 * 3600_000, -1, 'node-bad'),
                            grpc.status.INVALID_ARGUMENT, 'INVALID_FIELD');
    assert.ok(bad.badRequest, 'google.rpc.BadRequest in the details');
    const violation = bad.badRequest.field_violations.find((v) => v.field === 'appointment.end_time');
    assert.ok(violation, `field violation for appointment.end_time in ${JSON.stringify(bad.badRequest)}`);
    assert.ok(violation.description.length > 0);
    ok(`BookAppointment ending before it starts: INVALID_ARGUMENT, BadRequest ${violation.field}: "${violation.description}"`);

    // ---- unauthenticated: no token, and a token signed with another secret
    const noToken = await fails(call(S, 'GetClinic', { name: 'clinics/kap' }, null), grpc.status.UNAUTHENTICATED, 'UNAUTHENTICATED');
    const forged = mintJwt({ sub: 'people/boss', role: 'admin', clinics: [CLINIC], secret: 'not-the-secret-0123456789abcdef-xyz' });
    await fails(call(R, 'GetSessionRecord', { name }, forged), grpc.status.UNAUTHENTICATED, 'UNAUTHENTICATED');
    await fails(call(M, 'GetConversation', { name: conversation }, forged), grpc.status.UNAUTHENTICATED, 'UNAUTHENTICATED');
    assert.equal((await call(S, 'GetClinic', { name: 'clinics/kap' }, tok.admin)).name, 'clinics/kap', 'the same call with a valid token works');
    ok(`no token / forged token: UNAUTHENTICATED on all three services ("${noToken.err.details}")`);
  } finally {
    for (const c of clients) c.close();
  }
}

async function main() {
  const dir = makeTempDir();
  let failed = false;
  let timer;
  // The overall deadline and SIGINT / SIGTERM end the run the same way: through the one
  // clean-up path below (children stopped, temp dir removed).
  const aborted = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`journey did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`)), TOTAL_TIMEOUT_MS);
    for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => reject(new Error(`received ${sig}`)));
  });
  try {
    await Promise.race([journey(dir), aborted]);
    if (contractViolations.length) {
      throw new ContractError(`the services break the contract in ${contractViolations.length} place(s):\n  - ${contractViolations.join('\n  - ')}`);
    }
    console.log(`PASS node_client_journey: ${stepNo} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    failed = true;
    over = true;
    console.error(`not ok ${stepNo + 1} - ${e instanceof assert.AssertionError ? 'assertion failed' : 'error'}: ${e.stack || e}`);
    if (!(e instanceof ContractError)) dumpLogs();
  } finally {
    clearTimeout(timer);
    await stopAll();
    if (!failed || !process.env.CONTINUUM_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`kept ${dir}`);
  }
  process.exit(failed ? 1 : 0);
}

main();
