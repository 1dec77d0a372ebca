-- Failed logins in a row (CloudStack's incorrect.login.attempts.allowed lockout).
ALTER TABLE users ADD COLUMN login_attempts INTEGER NOT NULL DEFAULT 0;
-- Whether `value` is sealed with the data directory's key (secret settings).
ALTER TABLE configurations ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
