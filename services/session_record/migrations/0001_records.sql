-- Session records are append-only: every write inserts a new row in record_versions (the
-- whole record at that version); session_records points at the latest version. Nothing is
-- updated in place except that pointer, and nothing is deleted.
CREATE TABLE session_records (
  clinic_id TEXT NOT NULL,
  record_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  latest_version BIGINT NOT NULL,
  create_time BIGINT NOT NULL,
  PRIMARY KEY (clinic_id, record_id)
);
CREATE INDEX session_records_by_client ON session_records (clinic_id, client_id, create_time);

CREATE TABLE record_versions (
  clinic_id TEXT NOT NULL,
  record_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  author TEXT NOT NULL,
  action TEXT NOT NULL,
  reason TEXT NOT NULL,
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  PRIMARY KEY (clinic_id, record_id, version)
);

CREATE TABLE journal_entries (
  clinic_id TEXT NOT NULL,
  entry_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  visibility INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  data {{BLOB}} NOT NULL,
  PRIMARY KEY (clinic_id, entry_id)
);
CREATE INDEX journal_by_client ON journal_entries (clinic_id, client_id, create_time);

-- The per-clinic hash-chained audit log (see continuum.records.v1.AuditEntry). Sequence
-- numbers have no gaps: two writers racing for the same number collide on the primary key
-- and one retries.
CREATE TABLE audit_log (
  clinic_id TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  occur_time BIGINT NOT NULL,
  actor TEXT NOT NULL,
  on_behalf_of TEXT NOT NULL,
  resource TEXT NOT NULL,
  action TEXT NOT NULL,
  data {{BLOB}} NOT NULL,
  hash TEXT NOT NULL,
  PRIMARY KEY (clinic_id, sequence)
);

-- The head of each clinic's chain. Appending updates this row first, which serialises
-- appenders of one clinic (PostgreSQL row lock; SQLite has one writer anyway), so sequence
-- numbers are assigned without gaps or retries.
CREATE TABLE audit_heads (
  clinic_id TEXT PRIMARY KEY,
  sequence BIGINT NOT NULL,
  hash TEXT NOT NULL
);
