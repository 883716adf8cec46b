-- Audit entries waiting for their place in the clinic's chain. A read or write appends its
-- entry here in its own transaction, without taking the clinic's audit head: before, every
-- audited call of a clinic waited on that one row lock until the previous call had committed
-- (on PostgreSQL, record writes of a clinic ran one at a time, each holding the lock through
-- its commit's WAL flush). The chainer (services/session_record/audit.h) moves pending entries
-- into audit_log in id order, assigning sequence and hash under the head row, and deletes them
-- from here in the same transaction; listing or verifying a clinic's log chains its pending
-- entries first.
CREATE TABLE audit_pending (
  id {{AUTOINCREMENT_PK}},
  clinic_id TEXT NOT NULL,
  data {{BLOB}} NOT NULL
);
CREATE INDEX audit_pending_by_clinic ON audit_pending (clinic_id, id);
