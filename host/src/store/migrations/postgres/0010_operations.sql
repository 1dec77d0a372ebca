-- The provider whose failure an event reports (console: failures grouped by provider and reason).
ALTER TABLE events ADD COLUMN provider TEXT NULL;

-- The pending operation of a backup, found by the backup (listBackups shows its progress).
CREATE INDEX provider_operations_backup ON provider_operations(backup_id) WHERE backup_id IS NOT NULL;
