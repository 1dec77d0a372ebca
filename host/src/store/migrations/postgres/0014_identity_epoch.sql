-- A counter raised by every change to the rows that decide who a credential belongs to and
-- whether it may be used. Processes sharing the database compare it with the value they last saw
-- to drop their cached credentials (a user disabled through one replica is refused by all).
CREATE TABLE identity_epoch (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO identity_epoch(id, epoch) VALUES (1, 0);
CREATE FUNCTION identity_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER users_epoch AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION identity_epoch_bump();
CREATE TRIGGER accounts_epoch AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION identity_epoch_bump();
CREATE TRIGGER domains_epoch AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION identity_epoch_bump();
