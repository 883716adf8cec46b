-- The unread-message sweep reads each clinic's messages in creation order from a cursor
-- (Messenger::SweepUnread). Without this index it scanned and sorted the whole table every
-- second.
CREATE INDEX messages_by_clinic_time ON messages (clinic_id, create_time, conversation_id, sequence);
