-- Messaging schema. Conversations carry their members (kept in line with care teams from
-- scheduling events); messages are immutable and numbered per conversation.
CREATE TABLE conversations (
  clinic_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  last_sequence BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, conversation_id)
);

CREATE TABLE conversation_members (
  clinic_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  person_id TEXT NOT NULL,
  PRIMARY KEY (clinic_id, conversation_id, person_id)
);
CREATE INDEX conversation_members_by_person ON conversation_members (person_id);

-- (clinic, conversation, sequence) orders messages without gaps; (.., message_id) makes a
-- resend with the same client-supplied id a no-op.
CREATE TABLE messages (
  clinic_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  message_id TEXT NOT NULL,
  sender_id TEXT NOT NULL,
  urgent INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  PRIMARY KEY (clinic_id, conversation_id, sequence),
  CONSTRAINT messages_message_id UNIQUE (clinic_id, conversation_id, message_id)
);

CREATE TABLE notifications (
  person_id TEXT NOT NULL,
  notification_id TEXT NOT NULL,
  dedupe_key TEXT NOT NULL,
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  PRIMARY KEY (person_id, notification_id),
  CONSTRAINT notifications_dedupe UNIQUE (person_id, dedupe_key)
);

CREATE TABLE escalations (
  clinic_id TEXT NOT NULL,
  escalation_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  next_step_time BIGINT,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  revision BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, escalation_id)
);
CREATE INDEX escalations_due ON escalations (state, next_step_time);

-- Sessions in progress (from session-record events): urgent-by-default messages and sitter
-- check-ins.
CREATE TABLE active_sessions (
  clinic_id TEXT NOT NULL,
  appointment_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  sitter_id TEXT NOT NULL,
  kind INTEGER NOT NULL,
  start_time BIGINT NOT NULL,
  last_check_in BIGINT,
  next_check_in_due BIGINT,
  PRIMARY KEY (clinic_id, appointment_id)
);
CREATE INDEX active_sessions_by_client ON active_sessions (clinic_id, client_id);

-- Reminders scheduled durably from appointment events, delivered once.
CREATE TABLE reminders (
  clinic_id TEXT NOT NULL,
  appointment_id TEXT NOT NULL,
  offset_seconds BIGINT NOT NULL,
  due_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  sent INTEGER NOT NULL,
  PRIMARY KEY (clinic_id, appointment_id, offset_seconds)
);
CREATE INDEX reminders_due ON reminders (sent, due_time);

-- Events already handled (consumers are at-least-once).
CREATE TABLE processed_events (
  event_id TEXT PRIMARY KEY,
  process_time BIGINT NOT NULL
);
