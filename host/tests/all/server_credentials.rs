//! The in-memory credential cache of signed requests: every change to a user, its account or
//! its keys is seen by the very next request.

use crate::support_api::*;

const CREDENTIALS: &str = "unable to verify user credentials and/or request signature";

/// Runs one SQL statement through the store's writer, as any code path changing identity rows
/// would (`?1` is bound to the API key).
async fn write_sql(s: &TestServer, sql: &'static str, api_key: &str) {
    let key = api_key.to_string();
    s.state
        .store()
        .write(move |tx| {
            let changed = tx.execute(sql, [key])?;
            assert_eq!(changed, 1, "{sql}");
            Ok::<_, bnr::store::OpError>(())
        })
        .await
        .expect("write");
}

async fn user_with_cached_credential(s: &TestServer, name: &str) -> Creds {
    let creds = s.create_user(name, "User", None).await;
    s.client(creds.clone())
        .call("listZones", &[])
        .await
        .ok("listZones");
    assert!(
        !s.state.credentials.is_empty(),
        "the signed request left its credential in memory"
    );
    creds
}

async fn assert_refused(s: &TestServer, creds: &Creds) {
    let r = s.client(creds.clone()).call("listZones", &[]).await;
    assert_eq!(r.err("listZones", 401), CREDENTIALS);
}

#[tokio::test]
async fn regenerated_keys_retire_the_old_key_at_once() {
    let s = TestServer::start().await;
    let old = user_with_cached_credential(&s, "rotating").await;
    let users = s
        .admin()
        .call("listUsers", &[("username", "rotating")])
        .await;
    let user_id = users.ok("listUsers")["user"][0]["id"]
        .as_str()
        .expect("user id")
        .to_string();
    let keys = s
        .admin()
        .call("registerUserKeys", &[("id", &user_id)])
        .await;
    let k = &keys.ok("registerUserKeys")["userkeys"];
    let new = Creds {
        api_key: k["apikey"].as_str().expect("apikey").to_string(),
        secret_key: k["secretkey"].as_str().expect("secretkey").to_string(),
    };
    assert_refused(&s, &old).await;
    s.client(new).call("listZones", &[]).await.ok("listZones");
}

#[tokio::test]
async fn disabling_a_user_refuses_its_next_request_and_enabling_accepts_it_again() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "disabled-user").await;
    write_sql(
        &s,
        "UPDATE users SET state = 'disabled' WHERE api_key = ?1",
        &creds.api_key,
    )
    .await;
    assert_refused(&s, &creds).await;
    write_sql(
        &s,
        "UPDATE users SET state = 'enabled' WHERE api_key = ?1",
        &creds.api_key,
    )
    .await;
    s.client(creds).call("listZones", &[]).await.ok("listZones");
}

#[tokio::test]
async fn disabling_the_account_refuses_its_users_next_request() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "disabled-account").await;
    write_sql(
        &s,
        "UPDATE accounts SET state = 'disabled' \
         WHERE id = (SELECT account_id FROM users WHERE api_key = ?1)",
        &creds.api_key,
    )
    .await;
    assert_refused(&s, &creds).await;
}

#[tokio::test]
async fn a_removed_user_or_account_is_refused_at_once() {
    let s = TestServer::start().await;
    let user = user_with_cached_credential(&s, "removed-user").await;
    write_sql(
        &s,
        "UPDATE users SET removed = 1 WHERE api_key = ?1",
        &user.api_key,
    )
    .await;
    assert_refused(&s, &user).await;

    let in_account = user_with_cached_credential(&s, "removed-account").await;
    write_sql(
        &s,
        "UPDATE accounts SET removed = 1 \
         WHERE id = (SELECT account_id FROM users WHERE api_key = ?1)",
        &in_account.api_key,
    )
    .await;
    assert_refused(&s, &in_account).await;
}

#[tokio::test]
async fn a_rolled_back_change_leaves_the_credential_working() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "rolled-back").await;
    let key = creds.api_key.clone();
    let failed: Result<(), bnr::store::OpError> = s
        .state
        .store()
        .write(move |tx| {
            tx.execute(
                "UPDATE users SET state = 'disabled' WHERE api_key = ?1",
                [key],
            )?;
            Err(bnr::store::OpError::InvalidState("abandoned".into()))
        })
        .await;
    assert!(failed.is_err());
    s.client(creds).call("listZones", &[]).await.ok("listZones");
}
