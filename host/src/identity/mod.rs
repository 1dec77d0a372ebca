//! Domains, accounts, users, API keys, and the authenticated [`Caller`] with its access checks.
//!
//! All functions take a `&Connection` (or a transaction, which derefs to one) so callers compose
//! them inside `Store::read` / `Store::write`.

use crate::store::db::{Connection, OptionalExtension, Row, params};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

mod credentials;

pub use credentials::{Credential, CredentialCache};

use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpError, OpResult, Secrets, new_uuid, now};

/// Random bytes in a generated API key / secret key (CloudStack uses 64 too; base64url → 86 chars).
const API_KEY_BYTES: usize = 64;
/// Salt length for password hashes.
const PASSWORD_SALT_BYTES: usize = 16;
/// Longest password accepted (bounds the hashing work per login attempt).
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Root administrator: everything, everywhere.
    Admin,
    /// Domain administrator: its domain and every subdomain.
    DomainAdmin,
    /// End user: its own account.
    User,
}

impl Role {
    pub fn as_db(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::DomainAdmin => "domainadmin",
            Role::User => "user",
        }
    }
    pub fn from_db(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "domainadmin" => Some(Role::DomainAdmin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
    /// CloudStack `accounttype`: 0 user, 1 root admin, 2 domain admin.
    pub fn account_type(self) -> i64 {
        match self {
            Role::User => 0,
            Role::Admin => 1,
            Role::DomainAdmin => 2,
        }
    }
    pub fn from_account_type(t: i64) -> Option<Role> {
        match t {
            0 => Some(Role::User),
            1 => Some(Role::Admin),
            2 => Some(Role::DomainAdmin),
            _ => None,
        }
    }
    /// CloudStack `roletype`: Admin, DomainAdmin, User.
    pub fn role_type(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::DomainAdmin => "DomainAdmin",
            Role::User => "User",
        }
    }
    pub fn from_role_type(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "domainadmin" => Some(Role::DomainAdmin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// The authenticated user a request (or a job) acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub user_uuid: String,
    pub username: String,
    pub account_id: i64,
    pub account_uuid: String,
    pub account_name: String,
    pub domain_id: i64,
    pub domain_uuid: String,
    pub domain_name: String,
    /// `'/'` for ROOT, `'/child/'` below it.
    pub domain_path: String,
    pub role: Role,
}

impl Caller {
    pub fn is_root_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may see/act on a resource owned by `owner_account_id` in the domain
    /// whose path is `owner_domain_path`: root admin anything; domain admin its domain subtree;
    /// user its own account.
    pub fn can_access(&self, owner_account_id: i64, owner_domain_path: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::DomainAdmin => {
                owner_account_id == self.account_id
                    || owner_domain_path.starts_with(&self.domain_path)
            }
            Role::User => owner_account_id == self.account_id,
        }
    }

    /// [`Caller::can_access`] for an owner known by ids (looks the domain path up).
    pub fn can_access_owner(
        &self,
        conn: &Connection,
        owner_account_id: i64,
        owner_domain_id: i64,
    ) -> OpResult<bool> {
        if self.role == Role::Admin || owner_account_id == self.account_id {
            return Ok(true);
        }
        let path = domain_path(conn, owner_domain_id)?;
        Ok(self.can_access(owner_account_id, &path))
    }

    /// Fails with `PermissionDenied` unless [`Caller::can_access_owner`].
    pub fn check_access(
        &self,
        conn: &Connection,
        owner_account_id: i64,
        owner_domain_id: i64,
        what: &str,
    ) -> OpResult<()> {
        if self.can_access_owner(conn, owner_account_id, owner_domain_id)? {
            Ok(())
        } else {
            Err(OpError::PermissionDenied(format!(
                "Account '{}' does not have permission to operate on {what}",
                self.account_name
            )))
        }
    }
}

/// CloudStack's same-owner rule for objects put together (a volume and the instance it is
/// attached to, backup data and the instance it is restored onto): both must belong to one
/// account, whoever the caller is.
pub fn check_same_owner(a: (&str, i64), b: (&str, i64)) -> OpResult<()> {
    if a.1 == b.1 {
        Ok(())
    } else {
        Err(OpError::PermissionDenied(format!(
            "Entity {} and entity {} belong to different accounts",
            a.0, b.0
        )))
    }
}

/// Which owners an account-scoped list covers, resolved from `listall`/`account`/`domainid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    Account(i64),
    Domain {
        path: String,
        recursive: bool,
        id: i64,
    },
    All,
}

/// Standard CloudStack list scoping parameters.
#[derive(Debug, Clone, Default)]
pub struct ScopeParams {
    pub listall: bool,
    pub account: Option<String>,
    pub domain_id: Option<i64>,
    pub isrecursive: bool,
}

impl ListScope {
    /// Resolves the scope of an account-scoped list for `caller`. Without `listall` (and without
    /// `account`/`domainid`) every role sees its own account's resources, like CloudStack.
    pub fn resolve(conn: &Connection, caller: &Caller, p: &ScopeParams) -> OpResult<ListScope> {
        if let Some(domain_id) = p.domain_id {
            let path = domain_path(conn, domain_id)?;
            let visible = caller.is_root_admin()
                || (caller.role == Role::DomainAdmin && path.starts_with(&caller.domain_path))
                || (caller.role == Role::User && domain_id == caller.domain_id);
            if !visible {
                return Err(OpError::PermissionDenied(format!(
                    "Account '{}' does not have permission to access domain",
                    caller.account_name
                )));
            }
            if let Some(name) = &p.account {
                let account_id = account_id_by_name(conn, domain_id, name)?.ok_or_else(|| {
                    OpError::InvalidParameter(format!(
                        "Unable to find account {name} in the specified domain"
                    ))
                })?;
                if caller.role == Role::User && account_id != caller.account_id {
                    return Err(OpError::PermissionDenied(format!(
                        "Account '{}' does not have permission to access account {name}",
                        caller.account_name
                    )));
                }
                return Ok(ListScope::Account(account_id));
            }
            if caller.role == Role::User {
                return Ok(ListScope::Account(caller.account_id));
            }
            return Ok(ListScope::Domain {
                path,
                recursive: p.isrecursive || p.listall,
                id: domain_id,
            });
        }
        if let Some(name) = &p.account {
            let account_id =
                account_id_by_name(conn, caller.domain_id, name)?.ok_or_else(|| {
                    OpError::InvalidParameter(format!(
                        "Unable to find account {name} in the specified domain"
                    ))
                })?;
            if caller.role == Role::User && account_id != caller.account_id {
                return Err(OpError::PermissionDenied(format!(
                    "Account '{}' does not have permission to access account {name}",
                    caller.account_name
                )));
            }
            return Ok(ListScope::Account(account_id));
        }
        if !p.listall {
            return Ok(ListScope::Account(caller.account_id));
        }
        Ok(match caller.role {
            Role::Admin => ListScope::All,
            Role::DomainAdmin => ListScope::Domain {
                path: caller.domain_path.clone(),
                recursive: true,
                id: caller.domain_id,
            },
            Role::User => ListScope::Account(caller.account_id),
        })
    }

    /// Adds the scope condition on the given owner columns to `filter`.
    pub fn apply(&self, filter: &mut Filter, account_col: &str, domain_col: &str) {
        match self {
            ListScope::All => {}
            ListScope::Account(id) => {
                filter.and(&format!("{account_col} = ?"), [(*id).into()]);
            }
            ListScope::Domain {
                recursive: false,
                id,
                ..
            } => {
                filter.and(&format!("{domain_col} = ?"), [(*id).into()]);
            }
            ListScope::Domain {
                path,
                recursive: true,
                ..
            } => {
                if path == "/" {
                    return;
                }
                let pattern = format!("{}%", crate::store::query::escape_like(path));
                filter.and(
                    &format!(
                        "{domain_col} IN (SELECT id FROM domains WHERE path LIKE ? ESCAPE '\\')"
                    ),
                    [pattern.into()],
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Domains

#[derive(Debug, Clone)]
pub struct Domain {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub parent_id: Option<i64>,
    pub parent_uuid: Option<String>,
    pub parent_name: Option<String>,
    pub path: String,
    pub has_child: bool,
}

impl Domain {
    /// Depth below ROOT (ROOT is 0).
    pub fn level(&self) -> usize {
        self.path.matches('/').count().saturating_sub(1)
    }
    /// CloudStack's display path: `ROOT`, `ROOT/child`.
    pub fn display_path(&self) -> String {
        let trimmed = self.path.trim_matches('/');
        if trimmed.is_empty() {
            "ROOT".to_string()
        } else {
            format!("ROOT/{trimmed}")
        }
    }
}

const DOMAIN_COLUMNS: &str = "d.id, d.uuid, d.name, d.parent_id, p.uuid, p.name, d.path, \
     EXISTS(SELECT 1 FROM domains c WHERE c.parent_id = d.id AND c.removed IS NULL)";
const DOMAIN_FROM: &str = "domains d LEFT JOIN domains p ON p.id = d.parent_id";

fn domain_from_row(r: &Row<'_>) -> crate::store::db::Result<Domain> {
    Ok(Domain {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        parent_id: r.get(3)?,
        parent_uuid: r.get(4)?,
        parent_name: r.get(5)?,
        path: r.get(6)?,
        has_child: r.get(7)?,
    })
}

pub fn domain_path(conn: &Connection, domain_id: i64) -> OpResult<String> {
    conn.prepare_cached("SELECT path FROM domains WHERE id = ?1")?
        .query_row([domain_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| OpError::InvalidParameter(format!("domain {domain_id} does not exist")))
}

pub fn get_domain(conn: &Connection, domain_id: i64) -> OpResult<Domain> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM {DOMAIN_FROM} WHERE d.id = ?1"
        ))?
        .query_row([domain_id], domain_from_row)?)
}

pub fn root_domain_id(conn: &Connection) -> OpResult<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM domains WHERE path = '/' AND removed IS NULL",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Creates ROOT (`parent == None`) or a child domain.
pub fn create_domain(conn: &Connection, name: &str, parent: Option<i64>) -> OpResult<Domain> {
    let path = match parent {
        None => "/".to_string(),
        Some(parent_id) => {
            if name.is_empty() || name.contains('/') {
                return Err(OpError::InvalidParameter(
                    "Domain name must be non-empty and must not contain '/'".into(),
                ));
            }
            format!("{}{name}/", domain_path(conn, parent_id)?)
        }
    };
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM domains WHERE path = ?1 AND removed IS NULL)",
        [&path],
        |r| r.get(0),
    )?;
    if exists {
        return Err(OpError::InvalidParameter(format!(
            "Domain with name {name} already exists for the parent domain"
        )));
    }
    let inserted_id = conn.insert(
        "INSERT INTO domains(uuid, name, parent_id, path, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new_uuid(), name, parent, path, now()],
    )?;
    get_domain(conn, inserted_id)
}

pub fn list_domains(
    conn: &Connection,
    caller: &Caller,
    id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<Domain>> {
    let mut f = Filter::new();
    f.and("d.removed IS NULL", []);
    match caller.role {
        Role::Admin => {}
        Role::DomainAdmin => {
            let pattern = format!("{}%", crate::store::query::escape_like(&caller.domain_path));
            f.and("d.path LIKE ? ESCAPE '\\'", [pattern.into()]);
        }
        Role::User => {
            f.and("d.id = ?", [caller.domain_id.into()]);
        }
    }
    f.eq_opt("d.id", id);
    f.eq_opt("d.name", name);
    f.keyword(&["d.name"], keyword);
    Ok(f.list(
        conn,
        DOMAIN_COLUMNS,
        DOMAIN_FROM,
        "d.id",
        page,
        domain_from_row,
    )?)
}

// ---------------------------------------------------------------------------------------------
// Accounts and users

#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub role: Role,
    pub state: String,
    pub domain_id: i64,
    pub domain_uuid: String,
    pub domain_name: String,
    pub domain_path: String,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub uuid: String,
    pub username: String,
    pub email: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub state: String,
    pub api_key: Option<String>,
    pub created: i64,
    pub account: Account,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account_name: String,
    pub domain_id: i64,
    pub role: Role,
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
}

const ACCOUNT_COLUMNS: &str =
    "a.id, a.uuid, a.name, a.role, a.state, d.id, d.uuid, d.name, d.path, a.created";
const ACCOUNT_FROM: &str = "accounts a JOIN domains d ON d.id = a.domain_id";

fn account_from_row_at(r: &Row<'_>, base: usize) -> crate::store::db::Result<Account> {
    let role: String = r.get(base + 3)?;
    Ok(Account {
        id: r.get(base)?,
        uuid: r.get(base + 1)?,
        name: r.get(base + 2)?,
        role: Role::from_db(&role).unwrap_or(Role::User),
        state: r.get(base + 4)?,
        domain_id: r.get(base + 5)?,
        domain_uuid: r.get(base + 6)?,
        domain_name: r.get(base + 7)?,
        domain_path: r.get(base + 8)?,
        created: r.get(base + 9)?,
    })
}

const USER_COLUMNS: &str = "u.id, u.uuid, u.username, u.email, u.firstname, u.lastname, u.state, \
     u.api_key, u.created, a.id, a.uuid, a.name, a.role, a.state, d.id, d.uuid, d.name, d.path, a.created";
const USER_FROM: &str =
    "users u JOIN accounts a ON a.id = u.account_id JOIN domains d ON d.id = a.domain_id";

fn user_from_row(r: &Row<'_>) -> crate::store::db::Result<User> {
    Ok(User {
        id: r.get(0)?,
        uuid: r.get(1)?,
        username: r.get(2)?,
        email: r.get(3)?,
        firstname: r.get(4)?,
        lastname: r.get(5)?,
        state: r.get(6)?,
        api_key: r.get(7)?,
        created: r.get(8)?,
        account: account_from_row_at(r, 9)?,
    })
}

impl User {
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.id,
            user_uuid: self.uuid.clone(),
            username: self.username.clone(),
            account_id: self.account.id,
            account_uuid: self.account.uuid.clone(),
            account_name: self.account.name.clone(),
            domain_id: self.account.domain_id,
            domain_uuid: self.account.domain_uuid.clone(),
            domain_name: self.account.domain_name.clone(),
            domain_path: self.account.domain_path.clone(),
            role: self.account.role,
        }
    }
    /// Both the user and its account are enabled.
    pub fn is_enabled(&self) -> bool {
        self.state == "enabled" && self.account.state == "enabled"
    }
}

pub fn account_id_by_name(conn: &Connection, domain_id: i64, name: &str) -> OpResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM accounts WHERE domain_id = ?1 AND name = ?2 AND removed IS NULL",
        )?
        .query_row(params![domain_id, name], |r| r.get(0))
        .optional()?)
}

pub fn get_account(conn: &Connection, account_id: i64) -> OpResult<Account> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM {ACCOUNT_FROM} WHERE a.id = ?1"
        ))?
        .query_row([account_id], |r| account_from_row_at(r, 0))?)
}

pub fn get_user(conn: &Connection, user_id: i64) -> OpResult<User> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM {USER_FROM} WHERE u.id = ?1"
        ))?
        .query_row([user_id], user_from_row)?)
}

/// The live user owning `api_key`, with its secret key (decrypted): the one lookup of a
/// user's API credentials.
pub fn user_by_api_key(
    conn: &Connection,
    secrets: &Secrets,
    api_key: &str,
) -> OpResult<Option<(User, String)>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, u.secret_key FROM {USER_FROM} \
             WHERE u.api_key = ?1 AND u.removed IS NULL AND a.removed IS NULL"
        ))?
        .query_row([api_key], |r| {
            Ok((user_from_row(r)?, r.get::<Option<String>>(19)?))
        })
        .optional()?;
    let Some((user, Some(sealed))) = row else {
        return Ok(None);
    };
    let secret = secrets
        .open(&sealed)
        .map_err(|e| OpError::Store(e.into()))?;
    Ok(Some((user, secret)))
}

/// Users of all accounts in one domain named `username` (CloudStack usernames are unique per domain).
fn user_by_login(
    conn: &Connection,
    username: &str,
    domain_id: i64,
) -> OpResult<Option<(User, Option<String>)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM {USER_FROM} \
             WHERE u.username = ?1 AND a.domain_id = ?2 AND u.removed IS NULL AND a.removed IS NULL"
        ))?
        .query_row(params![username, domain_id], |r| {
            Ok((user_from_row(r)?, r.get::<Option<String>>(19)?))
        })
        .optional()?)
}

/// Finds a domain by login `domain` path (`/`, `/child`, `ROOT/child`) or uuid.
pub fn domain_id_for_login(
    conn: &Connection,
    path: Option<&str>,
    domain_uuid: Option<&str>,
) -> OpResult<Option<i64>> {
    if let Some(uuid) = domain_uuid {
        return Ok(conn
            .query_row(
                "SELECT id FROM domains WHERE uuid = ?1 AND removed IS NULL",
                [uuid],
                |r| r.get(0),
            )
            .optional()?);
    }
    let raw = path.unwrap_or("/").trim();
    let raw = raw.strip_prefix("ROOT").unwrap_or(raw);
    let trimmed = raw.trim_matches('/');
    let normalized = if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    };
    Ok(conn
        .query_row(
            "SELECT id FROM domains WHERE path = ?1 AND removed IS NULL",
            [normalized],
            |r| r.get(0),
        )
        .optional()?)
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Right, but stored in the legacy SHA-256 form: store a fresh argon2id hash.
    YesRehash,
}

/// What a login attempt did (for the api layer; the reason is never shown to the client).
#[derive(Debug)]
pub enum LoginOutcome {
    Success(User),
    Failed,
    /// This failure disabled the user (`incorrect.login.attempts.allowed` reached).
    FailedAndDisabled(User),
}

/// Verifies username/password in a domain with the same hashing work whether or not the user
/// exists (no timing oracle), counts failed attempts, and disables the user when
/// `attempts_allowed` failures in a row are reached (CloudStack's lockout; `<= 0`: never). A
/// legacy SHA-256 hash is replaced by an argon2id one on a successful login.
pub async fn login(
    store: &crate::store::Store,
    username: &str,
    password: &str,
    domain_id: i64,
    attempts_allowed: i64,
) -> OpResult<LoginOutcome> {
    let name = username.to_string();
    let found = store
        .read(move |c| user_by_login(c, &name, domain_id))
        .await?;
    let (user, stored) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let valid_len = !password.is_empty() && password.len() <= MAX_PASSWORD_LEN;
    let (pw, stored_hash) = (password.to_string(), stored.clone());
    let (verified, rehash) = tokio::task::spawn_blocking(move || {
        let stored = match stored_hash.as_deref() {
            Some(hash) => hash,
            None => dummy_hash(),
        };
        // Same work for an unknown user, a user without a password and an over-long password.
        let verified = verify_password(&pw, stored);
        let verified = if valid_len && stored_hash.is_some() {
            verified
        } else {
            Verified::No
        };
        let rehash = (verified == Verified::YesRehash).then(|| hash_password(&pw));
        (verified, rehash)
    })
    .await
    .map_err(|e| OpError::Store(crate::store::StoreError::Task(e.to_string())))?;
    let Some(user) = user.filter(User::is_enabled) else {
        return Ok(LoginOutcome::Failed);
    };
    let user_id = user.id;
    if verified == Verified::No {
        let (account_id, domain_id, uuid) =
            (user.account.id, user.account.domain_id, user.uuid.clone());
        let text = format!(
            "User {} was disabled after {attempts_allowed} failed login attempts in a row",
            user.username
        );
        let disabled = store
            .write(move |tx| {
                let attempts: i64 = tx
                    .prepare_cached(
                        "UPDATE users SET login_attempts = login_attempts + 1 WHERE id = ?1
                         RETURNING login_attempts",
                    )?
                    .query_row([user_id], |r| r.get(0))?;
                if attempts_allowed > 0 && attempts >= attempts_allowed {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE users SET state = 'disabled' WHERE id = ?1 AND state = 'enabled'",
                        )?
                        .execute([user_id])?;
                    if changed == 1 {
                        use crate::store::events::{self, Level, NewEvent, State};
                        events::record(
                            tx,
                            &NewEvent {
                                event_type: "USER.DISABLE",
                                level: Level::Warn,
                                state: State::Completed,
                                description: &text,
                                account_id,
                                domain_id,
                                user_id: None,
                                resource_type: Some("User"),
                                resource_uuid: Some(&uuid),
                            },
                        )?;
                    }
                    return Ok::<_, OpError>(changed == 1);
                }
                Ok(false)
            })
            .await?;
        return Ok(if disabled {
            LoginOutcome::FailedAndDisabled(user)
        } else {
            LoginOutcome::Failed
        });
    }
    let new_hash = rehash.transpose()?;
    store
        .write(move |tx| {
            tx.prepare_cached("UPDATE users SET login_attempts = 0 WHERE id = ?1")?
                .execute([user_id])?;
            if let Some(h) = &new_hash {
                tx.prepare_cached("UPDATE users SET password_hash = ?1 WHERE id = ?2")?
                    .execute(params![h, user_id])?;
            }
            Ok::<_, OpError>(())
        })
        .await?;
    Ok(LoginOutcome::Success(user))
}

pub fn create_account(conn: &Connection, new: &NewAccount) -> OpResult<User> {
    if new.account_name.is_empty() || new.username.is_empty() {
        return Err(OpError::InvalidParameter(
            "Account name and username must not be empty".into(),
        ));
    }
    if new.password.is_empty() || new.password.len() > MAX_PASSWORD_LEN {
        return Err(OpError::InvalidParameter(format!(
            "Password must be between 1 and {MAX_PASSWORD_LEN} characters"
        )));
    }
    if account_id_by_name(conn, new.domain_id, &new.account_name)?.is_some() {
        return Err(OpError::InvalidState(format!(
            "The specified account: {} already exists",
            new.account_name
        )));
    }
    if user_by_login(conn, &new.username, new.domain_id)?.is_some() {
        return Err(OpError::InvalidState(format!(
            "The user {} already exists in domain",
            new.username
        )));
    }
    let ts = now();
    let account_id = conn.insert(
        "INSERT INTO accounts(uuid, name, domain_id, role, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            new_uuid(),
            new.account_name,
            new.domain_id,
            new.role.as_db(),
            ts
        ],
    )?;
    let inserted_id = conn.insert(
        "INSERT INTO users(uuid, account_id, username, password_hash, email, firstname, lastname, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            new_uuid(),
            account_id,
            new.username,
            hash_password(&new.password)?,
            new.email,
            new.firstname,
            new.lastname,
            ts
        ],
    )?;
    get_user(conn, inserted_id)
}

/// Generates and stores a fresh API key and secret key for a user; returns `(apikey, secretkey)`.
pub fn register_user_keys(
    conn: &Connection,
    secrets: &Secrets,
    user_id: i64,
) -> OpResult<(String, String)> {
    let (api_key, secret_key) = (random_key(), random_key());
    set_user_keys(conn, secrets, user_id, &api_key, &secret_key)?;
    Ok((api_key, secret_key))
}

/// Stores given keys (bootstrap with operator-provided keys); the secret key sealed.
pub fn set_user_keys(
    conn: &Connection,
    secrets: &Secrets,
    user_id: i64,
    api_key: &str,
    secret_key: &str,
) -> OpResult<()> {
    let taken: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM users WHERE api_key = ?1 AND id != ?2)",
        params![api_key, user_id],
        |r| r.get(0),
    )?;
    if taken {
        return Err(OpError::InvalidState("API key already in use".into()));
    }
    conn.execute(
        "UPDATE users SET api_key = ?1, secret_key = ?2 WHERE id = ?3",
        params![
            api_key,
            secrets
                .seal(secret_key)
                .map_err(|e| OpError::Store(e.into()))?,
            user_id
        ],
    )?;
    Ok(())
}

/// The live (not removed) user `user_id` with its live account; `NotFound` otherwise.
pub fn get_live_user(conn: &Connection, user_id: i64) -> OpResult<User> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM {USER_FROM} \
         WHERE u.id = ?1 AND u.removed IS NULL AND a.removed IS NULL"
    ))?
    .query_row([user_id], user_from_row)
    .optional()?
    .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find active user by id {user_id}")))
}

/// The live (not removed) account `account_id`; `NotFound` otherwise.
pub fn get_live_account(conn: &Connection, account_id: i64) -> OpResult<Account> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM {ACCOUNT_FROM} WHERE a.id = ?1 AND a.removed IS NULL"
    ))?
    .query_row([account_id], |r| account_from_row_at(r, 0))
    .optional()?
    .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find account by id {account_id}")))
}

/// Lifecycle states of users and accounts a command may set (`locked`: accounts only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleState {
    Enabled,
    Disabled,
    Locked,
}

impl LifecycleState {
    pub fn as_db(self) -> &'static str {
        match self {
            LifecycleState::Enabled => "enabled",
            LifecycleState::Disabled => "disabled",
            LifecycleState::Locked => "locked",
        }
    }
}

pub fn set_user_state(conn: &Connection, user_id: i64, state: LifecycleState) -> OpResult<User> {
    conn.execute(
        "UPDATE users SET state = ?1 WHERE id = ?2 AND removed IS NULL",
        params![state.as_db(), user_id],
    )?;
    get_live_user(conn, user_id)
}

pub fn set_account_state(
    conn: &Connection,
    account_id: i64,
    state: LifecycleState,
) -> OpResult<Account> {
    conn.execute(
        "UPDATE accounts SET state = ?1 WHERE id = ?2 AND removed IS NULL",
        params![state.as_db(), account_id],
    )?;
    get_live_account(conn, account_id)
}

/// Marks a user removed and drops its API keys, so neither the key nor a session works again.
pub fn remove_user(conn: &Connection, user_id: i64) -> OpResult<()> {
    conn.execute(
        "UPDATE users SET removed = ?1, api_key = NULL, secret_key = NULL \
         WHERE id = ?2 AND removed IS NULL",
        params![now(), user_id],
    )?;
    Ok(())
}

/// Marks an account and all its users removed. Refused while the account still owns
/// instances, volumes or backups: their data would otherwise be left without an owner.
pub fn remove_account(conn: &Connection, account_id: i64) -> OpResult<()> {
    let (vms, volumes, backups): (i64, i64, i64) = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM vms WHERE account_id = ?1 AND removed IS NULL), \
                (SELECT COUNT(*) FROM volumes WHERE account_id = ?1 AND removed IS NULL), \
                (SELECT COUNT(*) FROM backups WHERE account_id = ?1 AND removed IS NULL)",
        [account_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if vms > 0 || volumes > 0 || backups > 0 {
        return Err(OpError::InvalidState(format!(
            "The account still owns {vms} instance(s), {volumes} volume(s) and {backups} \
             backup(s); expunge and delete them before deleting the account"
        )));
    }
    let ts = now();
    conn.execute(
        "UPDATE users SET removed = ?1, api_key = NULL, secret_key = NULL \
         WHERE account_id = ?2 AND removed IS NULL",
        params![ts, account_id],
    )?;
    conn.execute(
        "UPDATE accounts SET removed = ?1 WHERE id = ?2 AND removed IS NULL",
        params![ts, account_id],
    )?;
    Ok(())
}

pub fn list_accounts(
    conn: &Connection,
    scope: &ListScope,
    id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<Account>> {
    let mut f = Filter::new();
    f.and("a.removed IS NULL", []);
    scope.apply(&mut f, "a.id", "a.domain_id");
    f.eq_opt("a.id", id);
    f.eq_opt("a.name", name);
    f.keyword(&["a.name"], keyword);
    Ok(
        f.list(conn, ACCOUNT_COLUMNS, ACCOUNT_FROM, "a.id", page, |r| {
            account_from_row_at(r, 0)
        })?,
    )
}

pub fn list_users(
    conn: &Connection,
    scope: &ListScope,
    id: Option<i64>,
    username: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<User>> {
    let mut f = Filter::new();
    f.and("u.removed IS NULL", []);
    scope.apply(&mut f, "u.account_id", "a.domain_id");
    f.eq_opt("u.id", id);
    f.eq_opt("u.username", username);
    f.keyword(&["u.username"], keyword);
    Ok(f.list(conn, USER_COLUMNS, USER_FROM, "u.id", page, user_from_row)?)
}

pub fn users_of_account(conn: &Connection, account_id: i64) -> OpResult<Vec<User>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM {USER_FROM} WHERE u.account_id = ?1 AND u.removed IS NULL ORDER BY u.id"
    ))?;
    Ok(st
        .query_map([account_id], user_from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?)
}

// ---------------------------------------------------------------------------------------------
// Secrets

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// A random API key or secret key (URL-safe base64, like CloudStack's).
pub fn random_key() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(API_KEY_BYTES))
}

/// A random password for bootstrap (URL-safe, 24 characters).
pub fn random_password() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(18))
}

/// argon2id cost: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane). Memory-hard, so
/// guessing offline needs memory per guess, and a login costs the server tens of milliseconds.
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_PASSES: u32 = 2;
const ARGON2_LANES: u32 = 1;

fn argon2() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// A PHC string `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`.
pub fn hash_password(password: &str) -> OpResult<String> {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::encode_b64(&random_bytes(PASSWORD_SALT_BYTES))
        .map_err(|e| OpError::InvalidState(format!("cannot hash the password: {e}")))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| OpError::InvalidState(format!("cannot hash the password: {e}")))?
        .to_string())
}

/// The hash verified for logins of unknown users, so that they cost what a known user's does.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_password()).unwrap_or_default())
}

/// Checks a password against a stored argon2id hash, or a legacy `sha256$<rounds>$…` one
/// (accepted once, then replaced: see [`login`]).
pub fn verify_password(password: &str, stored: &str) -> Verified {
    if stored.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        let ok = argon2::PasswordHash::new(stored)
            .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok());
        return if ok { Verified::Yes } else { Verified::No };
    }
    if verify_legacy_sha256(password, stored) {
        Verified::YesRehash
    } else {
        Verified::No
    }
}

/// Most SHA-256 rounds a legacy hash may ask for (they were written with 10,000).
const LEGACY_MAX_ROUNDS: u32 = 100_000;

fn verify_legacy_sha256(password: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(rounds), Some(salt), Some(digest), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(expected)) = (
        rounds.parse::<u32>(),
        STANDARD_NO_PAD.decode(salt),
        STANDARD_NO_PAD.decode(digest),
    ) else {
        return false;
    };
    if rounds == 0 || rounds > LEGACY_MAX_ROUNDS {
        return false;
    }
    let mut digest = Sha256::new()
        .chain_update(&salt)
        .chain_update(password.as_bytes())
        .finalize();
    for _ in 1..rounds {
        digest = Sha256::new()
            .chain_update(&salt)
            .chain_update(digest)
            .finalize();
    }
    digest.as_slice().ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trips_and_rejects_wrong_password() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify_password("s3cret", &h), Verified::Yes);
        assert_eq!(verify_password("s3creT", &h), Verified::No);
        assert_eq!(verify_password("s3cret", "garbage"), Verified::No);
        assert_ne!(hash_password("s3cret").unwrap(), h, "salted");
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let real = hash_password("x").unwrap();
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_string();
        assert_eq!(params(dummy_hash()), params(&real));
        assert_eq!(verify_password("x", dummy_hash()), Verified::No);
    }

    fn caller(role: Role, account_id: i64, path: &str) -> Caller {
        Caller {
            user_id: 1,
            user_uuid: String::new(),
            username: String::new(),
            account_id,
            account_uuid: String::new(),
            account_name: "a".into(),
            domain_id: 1,
            domain_uuid: String::new(),
            domain_name: String::new(),
            domain_path: path.into(),
            role,
        }
    }

    #[test]
    fn access_follows_role_scope() {
        assert!(caller(Role::Admin, 1, "/").can_access(9, "/x/"));
        let da = caller(Role::DomainAdmin, 1, "/x/");
        assert!(da.can_access(9, "/x/"));
        assert!(da.can_access(9, "/x/y/"));
        assert!(!da.can_access(9, "/xy/"));
        assert!(!da.can_access(9, "/"));
        let u = caller(Role::User, 1, "/x/");
        assert!(u.can_access(1, "/x/"));
        assert!(!u.can_access(2, "/x/"));
    }
}
