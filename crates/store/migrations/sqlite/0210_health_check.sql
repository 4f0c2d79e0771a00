-- health (issue 16): when the background health check next runs an
-- instance's `[verify]` request (Unix ms). NULL: one period after creation.
-- Claiming a due row moves it forward in the same statement, so replicas
-- never check one instance concurrently.
ALTER TABLE instances ADD COLUMN next_check_at BIGINT;
CREATE INDEX instances_next_check ON instances (next_check_at);

-- Retention: old delivered and dead-lettered events are deleted by age.
CREATE INDEX events_created ON events (created_at);
