-- One row rewritten by each readiness probe (`/readyz`): proves the store takes writes.
CREATE TABLE health_probe (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    checked BIGINT NOT NULL
);

-- Progress of a pending provider operation (`poll-operation`'s percent and message), shown as the
-- job's `jobprocstatus` and on the backup the operation works on.
ALTER TABLE async_jobs ADD COLUMN proc_status BIGINT NOT NULL DEFAULT 0;
ALTER TABLE provider_operations ADD COLUMN percent BIGINT NULL;
ALTER TABLE provider_operations ADD COLUMN message TEXT NULL;
