-- Retention deletes processed event ids by age (store::ProcessedEventsRetention).
CREATE INDEX processed_events_time ON processed_events (process_time);
