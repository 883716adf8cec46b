-- Scheduling schema. Resources are stored as their protobuf encoding (`data`) next to the
-- columns that queries filter, order or constrain on; `revision` feeds the etag.
-- Instants are BIGINT microseconds since the Unix epoch.

CREATE TABLE clinics (
  clinic_id TEXT PRIMARY KEY,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL
);

CREATE TABLE people (
  person_id TEXT PRIMARY KEY,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL
);

-- One row per (clinic, person): the person's role in that clinic (common.v1.Role number).
CREATE TABLE memberships (
  clinic_id TEXT NOT NULL,
  person_id TEXT NOT NULL,
  role INTEGER NOT NULL,
  PRIMARY KEY (clinic_id, person_id)
);

CREATE TABLE care_teams (
  clinic_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, client_id)
);

-- Denormalised members, for "the teams I am on" and care-team authorisation.
CREATE TABLE care_team_members (
  clinic_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  member_id TEXT NOT NULL,
  PRIMARY KEY (clinic_id, client_id, member_id)
);
CREATE INDEX care_team_members_by_member ON care_team_members (clinic_id, member_id);

CREATE TABLE programs (
  clinic_id TEXT NOT NULL,
  program_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, program_id)
);
-- At most one ACTIVE (state 1) program per client and clinic, enforced by the database.
CREATE UNIQUE INDEX programs_one_active ON programs (clinic_id, client_id) WHERE state = 1;

CREATE TABLE availability (
  clinic_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, provider_id)
);

CREATE TABLE appointments (
  clinic_id TEXT NOT NULL,
  appointment_id TEXT NOT NULL,
  program_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  room TEXT NOT NULL,
  kind INTEGER NOT NULL,
  state INTEGER NOT NULL,
  start_time BIGINT NOT NULL,
  end_time BIGINT NOT NULL,
  medicine_appointment_id TEXT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, appointment_id)
);
CREATE INDEX appointments_by_client ON appointments (clinic_id, client_id, start_time);
CREATE INDEX appointments_by_provider ON appointments (clinic_id, provider_id, start_time);
CREATE INDEX appointments_by_start ON appointments (clinic_id, start_time);
CREATE INDEX appointments_by_program ON appointments (clinic_id, program_id);

-- The double-booking guard. Every appointment that occupies time claims one row per minute
-- of its occupied interval for each resource it occupies ("client:<id>", "provider:<id>",
-- "room:<id>"). Two overlapping claims collide on the primary key inside the database, so
-- concurrent bookings of one slot cannot both commit, on SQLite and PostgreSQL alike.
CREATE TABLE occupancy (
  clinic_id TEXT NOT NULL,
  resource TEXT NOT NULL,
  minute BIGINT NOT NULL,
  appointment_id TEXT NOT NULL,
  PRIMARY KEY (clinic_id, resource, minute)
);
CREATE INDEX occupancy_by_appointment ON occupancy (clinic_id, appointment_id);

CREATE TABLE waitlist_entries (
  clinic_id TEXT NOT NULL,
  entry_id TEXT NOT NULL,
  program_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, entry_id)
);
CREATE INDEX waitlist_by_state ON waitlist_entries (clinic_id, state, create_time);
