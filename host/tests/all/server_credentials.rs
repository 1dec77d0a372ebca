//! The in-memory credential cache of signed requests: every change to a user, its account or
//! its keys is seen by the very next request.

use axum::http::Method;

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

// --- The same changes made the way an operator makes them: through the API. ---

async fn user_id(s: &TestServer, username: &str) -> String {
    let r = s
        .admin()
        .call("listUsers", &[("username", username), ("listall", "true")])
        .await;
    r.ok("listUsers")["user"][0]["id"]
        .as_str()
        .expect("user id")
        .to_string()
}

async fn account_id(s: &TestServer, name: &str) -> String {
    let r = s.admin().call("listAccounts", &[("name", name)]).await;
    r.ok("listAccounts")["account"][0]["id"]
        .as_str()
        .expect("account id")
        .to_string()
}

/// A password-login session of `username` (password `pw`, ROOT domain).
async fn session(s: &TestServer, username: &str) -> String {
    let r = s
        .send(
            Method::POST,
            "/client/api",
            Some(format!(
                "command=login&username={username}&password=pw&domain=%2F&response=json"
            )),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    r.ok("login")["sessionkey"]
        .as_str()
        .expect("sessionkey")
        .to_string()
}

async fn session_call(s: &TestServer, key: &str) -> Resp {
    let uri = format!(
        "/client/api?command=listZones&response=json&sessionkey={}",
        encode(key)
    );
    s.send(Method::GET, &uri, None, &[]).await
}

async fn event_types(s: &TestServer) -> Vec<String> {
    let r = s.admin().call("listEvents", &[("listall", "true")]).await;
    r.ok("listEvents")["event"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn disable_user_through_the_api_refuses_keys_and_ends_sessions_and_enable_restores_keys() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "api-disabled").await;
    let key = session(&s, "api-disabled").await;
    session_call(&s, &key).await.ok("listZones");
    let id = user_id(&s, "api-disabled").await;

    let r = s.admin().call("disableUser", &[("id", &id)]).await;
    assert_eq!(r.ok("disableUser")["user"]["state"], "disabled");
    assert_refused(&s, &creds).await;
    session_call(&s, &key).await.err("listZones", 401);

    let r = s.admin().call("enableUser", &[("id", &id)]).await;
    assert_eq!(r.ok("enableUser")["user"]["state"], "enabled");
    s.client(creds).call("listZones", &[]).await.ok("listZones");
    // The session ended with the disable; a new login works again.
    session_call(&s, &key).await.err("listZones", 401);
    let key = session(&s, "api-disabled").await;
    session_call(&s, &key).await.ok("listZones");

    let types = event_types(&s).await;
    assert!(types.iter().any(|t| t == "USER.DISABLE"), "{types:?}");
    assert!(types.iter().any(|t| t == "USER.ENABLE"), "{types:?}");
}

#[tokio::test]
async fn disable_account_through_the_api_is_a_job_and_enable_restores_access() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "api-acct").await;
    let key = session(&s, "api-acct").await;
    let id = account_id(&s, "api-acct").await;

    let done = s
        .admin()
        .call_async("disableAccount", &[("id", &id), ("lock", "false")])
        .await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobinstancetype"], "Account", "{done}");
    assert_eq!(done["jobresult"]["account"]["state"], "disabled", "{done}");
    assert_refused(&s, &creds).await;
    session_call(&s, &key).await.err("listZones", 401);

    let r = s
        .admin()
        .call(
            "enableAccount",
            &[
                ("account", "api-acct"),
                ("domainid", &root_domain(&s).await),
            ],
        )
        .await;
    assert_eq!(r.ok("enableAccount")["account"]["state"], "enabled");
    s.client(creds.clone())
        .call("listZones", &[])
        .await
        .ok("listZones");

    // lock=true locks the account, which refuses its users just the same.
    let done = s
        .admin()
        .call_async("disableAccount", &[("id", &id), ("lock", "true")])
        .await;
    assert_eq!(done["jobresult"]["account"]["state"], "locked", "{done}");
    assert_refused(&s, &creds).await;

    let types = event_types(&s).await;
    assert!(types.iter().any(|t| t == "ACCOUNT.DISABLE"), "{types:?}");
    assert!(types.iter().any(|t| t == "ACCOUNT.ENABLE"), "{types:?}");
}

async fn root_domain(s: &TestServer) -> String {
    let r = s.admin().call("listDomains", &[("name", "ROOT")]).await;
    r.ok("listDomains")["domain"][0]["id"]
        .as_str()
        .expect("ROOT id")
        .to_string()
}

#[tokio::test]
async fn delete_user_through_the_api_refuses_keys_and_sessions_for_good() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "api-deleted").await;
    let key = session(&s, "api-deleted").await;
    let id = user_id(&s, "api-deleted").await;

    let r = s.admin().call("deleteUser", &[("id", &id)]).await;
    assert_eq!(r.ok("deleteUser")["success"], true);
    assert_refused(&s, &creds).await;
    session_call(&s, &key).await.err("listZones", 401);
    let listed = s
        .admin()
        .call(
            "listUsers",
            &[("username", "api-deleted"), ("listall", "true")],
        )
        .await;
    assert!(listed.ok("listUsers")["user"].is_null(), "{}", listed.text);
    // Neither can a deleted user be enabled again.
    s.admin()
        .call("enableUser", &[("id", &id)])
        .await
        .err("enableUser", 431);
    assert_refused(&s, &creds).await;
    assert!(event_types(&s).await.iter().any(|t| t == "USER.DELETE"));
}

#[tokio::test]
async fn delete_account_through_the_api_refuses_its_users_and_keeps_accounts_with_data() {
    let s = TestServer::start().await;
    let creds = user_with_cached_credential(&s, "api-gone").await;
    let key = session(&s, "api-gone").await;
    let id = account_id(&s, "api-gone").await;

    let done = s.admin().call_async("deleteAccount", &[("id", &id)]).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"]["success"], true, "{done}");
    assert_refused(&s, &creds).await;
    session_call(&s, &key).await.err("listZones", 401);
    let listed = s
        .admin()
        .call("listAccounts", &[("name", "api-gone")])
        .await;
    assert!(
        listed.ok("listAccounts")["account"].is_null(),
        "{}",
        listed.text
    );
    assert!(event_types(&s).await.iter().any(|t| t == "ACCOUNT.DELETE"));

    // An account that still owns an instance is refused with a clear error, and keeps working.
    let owner = s.create_user("api-owner", "User", None).await;
    let client = s.client(owner.clone());
    s.deploy(&client, "kept", &[]).await;
    let id = account_id(&s, "api-owner").await;
    let done = s.admin().call_async("deleteAccount", &[("id", &id)]).await;
    assert_eq!(done["jobstatus"], 2, "{done}");
    let text = done["jobresult"]["errortext"].as_str().unwrap_or_default();
    assert!(text.contains("1 instance(s)"), "{done}");
    client.call("listZones", &[]).await.ok("listZones");
}

#[tokio::test]
async fn lifecycle_commands_refuse_self_root_admin_and_other_domains() {
    let s = TestServer::start().await;
    let admin_user = user_id(&s, "admin").await;
    let admin_account = account_id(&s, "admin").await;
    // The root admin can neither disable itself nor delete the root admin account.
    s.admin()
        .call("disableUser", &[("id", &admin_user)])
        .await
        .err("disableUser", 531);
    let r = s
        .admin()
        .call("deleteAccount", &[("id", &admin_account)])
        .await;
    r.err("deleteAccount", 531);

    let d1 = s
        .admin()
        .call("createDomain", &[("name", "d1")])
        .await
        .ok("createDomain")["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d2 = s
        .admin()
        .call("createDomain", &[("name", "d2")])
        .await
        .ok("createDomain")["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let da1 = s.create_user("da1", "DomainAdmin", Some(&d1)).await;
    let in_d1 = s.create_user("u1", "User", Some(&d1)).await;
    s.create_user("u2", "User", Some(&d2)).await;
    let da = s.client(da1);
    // A domain admin acts within its domain only, and never on the root admin.
    da.call("disableUser", &[("id", &user_id(&s, "u2").await)])
        .await
        .err("disableUser", 531);
    da.call("disableUser", &[("id", &admin_user)])
        .await
        .err("disableUser", 531);
    da.call("disableUser", &[("id", &user_id(&s, "da1").await)])
        .await
        .err("disableUser", 531);
    da.call("disableUser", &[("id", &user_id(&s, "u1").await)])
        .await
        .ok("disableUser");
    assert_refused(&s, &in_d1).await;
    // A user may call none of them.
    let u2 = s.create_user("u3", "User", None).await;
    s.client(u2)
        .call("enableUser", &[("id", &user_id(&s, "u1").await)])
        .await
        .err("enableUser", 401);
    // Without id, both account and domainid are needed.
    s.admin()
        .call("enableAccount", &[("account", "u1")])
        .await
        .err("enableAccount", 431);
}
