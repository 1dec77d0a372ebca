-- A counter raised by every change to the rows that decide who a credential belongs to and
-- whether it may be used. Processes sharing the database compare it with the value they last saw
-- to drop their cached credentials (a user disabled through one replica is refused by all).
CREATE TABLE identity_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO identity_epoch(id, epoch) VALUES (1, 0);
CREATE TRIGGER users_epoch_insert AFTER INSERT ON users
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_epoch_update AFTER UPDATE ON users
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_epoch_delete AFTER DELETE ON users
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_epoch_insert AFTER INSERT ON accounts
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_epoch_update AFTER UPDATE ON accounts
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_epoch_delete AFTER DELETE ON accounts
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER domains_epoch_insert AFTER INSERT ON domains
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER domains_epoch_update AFTER UPDATE ON domains
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER domains_epoch_delete AFTER DELETE ON domains
BEGIN UPDATE identity_epoch SET epoch = epoch + 1 WHERE id = 1; END;
