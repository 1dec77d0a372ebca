-- Running totals of the counted backups of each (instance, offering) pair, kept exact by the
-- triggers below, so that finishing a backup reads one row for its usage period instead of
-- summing every earlier backup of the instance. "Counted" is scheduler::usage's rule: a live
-- backup of an instance whose status is not Failed, Removed or Expunged. Sizes are summed in
-- floating point, as the sync pass's TOTAL() does (exact up to 2^53 bytes), so a provider's
-- huge size never fails a write with an integer overflow.
CREATE TABLE backup_pair_totals (
    vm_id              INTEGER NOT NULL,
    backup_offering_id INTEGER NOT NULL,
    counted            INTEGER NOT NULL,
    size               REAL NOT NULL,
    protected_size     REAL NOT NULL,
    PRIMARY KEY (vm_id, backup_offering_id)
) WITHOUT ROWID;

INSERT INTO backup_pair_totals(vm_id, backup_offering_id, counted, size, protected_size)
SELECT vm_id, backup_offering_id, COUNT(*), TOTAL(size), TOTAL(protected_size)
  FROM backups
 WHERE vm_id IS NOT NULL AND removed IS NULL AND status NOT IN ('Failed', 'Removed', 'Expunged')
 GROUP BY vm_id, backup_offering_id;

CREATE TRIGGER backups_pair_totals_insert AFTER INSERT ON backups
WHEN NEW.vm_id IS NOT NULL AND NEW.removed IS NULL
 AND NEW.status NOT IN ('Failed', 'Removed', 'Expunged')
BEGIN
    INSERT INTO backup_pair_totals(vm_id, backup_offering_id, counted, size, protected_size)
    VALUES (NEW.vm_id, NEW.backup_offering_id, 1, NEW.size, NEW.protected_size)
    ON CONFLICT(vm_id, backup_offering_id) DO UPDATE
       SET counted = counted + 1, size = size + excluded.size,
           protected_size = protected_size + excluded.protected_size;
END;

CREATE TRIGGER backups_pair_totals_update
AFTER UPDATE OF vm_id, backup_offering_id, status, removed, size, protected_size ON backups
BEGIN
    UPDATE backup_pair_totals
       SET counted = counted - 1, size = size - OLD.size,
           protected_size = protected_size - OLD.protected_size
     WHERE OLD.vm_id IS NOT NULL AND OLD.removed IS NULL
       AND OLD.status NOT IN ('Failed', 'Removed', 'Expunged')
       AND vm_id = OLD.vm_id AND backup_offering_id = OLD.backup_offering_id;
    INSERT INTO backup_pair_totals(vm_id, backup_offering_id, counted, size, protected_size)
    SELECT NEW.vm_id, NEW.backup_offering_id, 1, NEW.size, NEW.protected_size
     WHERE NEW.vm_id IS NOT NULL AND NEW.removed IS NULL
       AND NEW.status NOT IN ('Failed', 'Removed', 'Expunged')
    ON CONFLICT(vm_id, backup_offering_id) DO UPDATE
       SET counted = counted + 1, size = size + excluded.size,
           protected_size = protected_size + excluded.protected_size;
END;

CREATE TRIGGER backups_pair_totals_delete AFTER DELETE ON backups
WHEN OLD.vm_id IS NOT NULL AND OLD.removed IS NULL
 AND OLD.status NOT IN ('Failed', 'Removed', 'Expunged')
BEGIN
    UPDATE backup_pair_totals
       SET counted = counted - 1, size = size - OLD.size,
           protected_size = protected_size - OLD.protected_size
     WHERE vm_id = OLD.vm_id AND backup_offering_id = OLD.backup_offering_id;
END;
