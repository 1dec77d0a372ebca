-- Running totals of the counted backups of each (instance, offering) pair, kept exact by the
-- triggers below, so that finishing a backup reads one row for its usage period instead of
-- summing every earlier backup of the instance. "Counted" is scheduler::usage's rule: a live
-- backup of an instance whose status is not Failed, Removed or Expunged. Sizes are summed in
-- floating point, as on SQLite (exact up to 2^53 bytes), so a provider's huge size never fails
-- a write with an overflow.
CREATE TABLE backup_pair_totals (
    vm_id              BIGINT NOT NULL,
    backup_offering_id BIGINT NOT NULL,
    counted            BIGINT NOT NULL,
    size               DOUBLE PRECISION NOT NULL,
    protected_size     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (vm_id, backup_offering_id)
);

INSERT INTO backup_pair_totals(vm_id, backup_offering_id, counted, size, protected_size)
SELECT vm_id, backup_offering_id, COUNT(*),
       COALESCE(SUM(size::double precision), 0), COALESCE(SUM(protected_size::double precision), 0)
  FROM backups
 WHERE vm_id IS NOT NULL AND removed IS NULL AND status NOT IN ('Failed', 'Removed', 'Expunged')
 GROUP BY vm_id, backup_offering_id;

CREATE FUNCTION backups_pair_totals_add(v BIGINT, o BIGINT, s BIGINT, p BIGINT)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO backup_pair_totals(vm_id, backup_offering_id, counted, size, protected_size)
    VALUES (v, o, 1, s, p)
    ON CONFLICT(vm_id, backup_offering_id) DO UPDATE
       SET counted = backup_pair_totals.counted + 1,
           size = backup_pair_totals.size + excluded.size,
           protected_size = backup_pair_totals.protected_size + excluded.protected_size;
$$;

CREATE FUNCTION backups_pair_totals_sub(v BIGINT, o BIGINT, s BIGINT, p BIGINT)
RETURNS void LANGUAGE sql AS $$
    UPDATE backup_pair_totals
       SET counted = counted - 1, size = size - s, protected_size = protected_size - p
     WHERE vm_id = v AND backup_offering_id = o;
$$;

CREATE FUNCTION backups_pair_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.vm_id IS NOT NULL AND OLD.removed IS NULL
       AND OLD.status NOT IN ('Failed', 'Removed', 'Expunged') THEN
        PERFORM backups_pair_totals_sub(OLD.vm_id, OLD.backup_offering_id, OLD.size,
                                        OLD.protected_size);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.vm_id IS NOT NULL AND NEW.removed IS NULL
       AND NEW.status NOT IN ('Failed', 'Removed', 'Expunged') THEN
        PERFORM backups_pair_totals_add(NEW.vm_id, NEW.backup_offering_id, NEW.size,
                                        NEW.protected_size);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER backups_pair_totals_insert AFTER INSERT OR DELETE ON backups
    FOR EACH ROW EXECUTE FUNCTION backups_pair_totals();
CREATE TRIGGER backups_pair_totals_update
    AFTER UPDATE OF vm_id, backup_offering_id, status, removed, size, protected_size ON backups
    FOR EACH ROW EXECUTE FUNCTION backups_pair_totals();
