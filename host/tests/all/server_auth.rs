//! Signature (v3 / unversioned), expiry, keys, sessions, roles.

use axum::http::Method;

use crate::support_api::*;

const CREDENTIALS: &str = "unable to verify user credentials and/or request signature";

fn assert_credentials_401(r: &Resp, command: &str) {
    assert_eq!(r.err(command, 401), CREDENTIALS);
    let inner = r.inner(command);
    assert!(
        inner.get("cserrorcode").is_none(),
        "no cserrorcode on signature failures: {}",
        r.text
    );
    assert_eq!(r.x_description.as_deref(), Some(CREDENTIALS));
}

#[tokio::test]
async fn a_v3_signed_get_is_accepted_with_json_content_type() {
    let s = TestServer::start().await;
    let r = s.admin().call("listZones", &[]).await;
    assert_eq!(r.ok("listZones")["count"], 1);
    assert_eq!(r.content_type, "application/json; charset=UTF-8");
}

#[tokio::test]
async fn a_signed_post_with_a_form_body_is_accepted() {
    let s = TestServer::start().await;
    let r = s.admin().post("listZones", &[("name", "zone1")]).await;
    assert_eq!(r.ok("listZones")["zone"][0]["name"], "zone1");
}

#[tokio::test]
async fn an_unversioned_signature_without_expires_is_accepted_like_libcloud_sends_it() {
    let s = TestServer::start().await;
    let mut p = vec![
        ("command".to_string(), "listZones".to_string()),
        ("apiKey".to_string(), ADMIN_API_KEY.to_string()),
        ("response".to_string(), "json".to_string()),
    ];
    let sig = cs_signature(ADMIN_SECRET_KEY, &p);
    p.push(("signature".into(), sig));
    let r = s
        .send(
            Method::GET,
            &format!("/client/api?{}", query_string(&p)),
            None,
            &[],
        )
        .await;
    r.ok("listZones");
}

#[tokio::test]
async fn cloudmonkey_style_lower_case_names_are_accepted() {
    let s = TestServer::start().await;
    let mut p = vec![
        ("signatureversion".to_string(), "3".to_string()),
        ("apikey".to_string(), ADMIN_API_KEY.to_string()),
        ("expires".to_string(), expires_in(600)),
        ("command".to_string(), "listZones".to_string()),
        ("response".to_string(), "json".to_string()),
    ];
    let sig = cs_signature(ADMIN_SECRET_KEY, &p);
    p.push(("signature".into(), sig));
    let r = s
        .send(
            Method::GET,
            &format!("/client/api?{}", query_string(&p)),
            None,
            &[],
        )
        .await;
    r.ok("listZones");
}

fn v3_with_expires(expires: &str) -> String {
    let mut p = vec![
        ("command".to_string(), "listZones".to_string()),
        ("response".to_string(), "json".to_string()),
        ("apiKey".to_string(), ADMIN_API_KEY.to_string()),
        ("signatureVersion".to_string(), "3".to_string()),
        ("expires".to_string(), expires.to_string()),
    ];
    let sig = cs_signature(ADMIN_SECRET_KEY, &p);
    p.push(("signature".into(), sig));
    format!("/client/api?{}", query_string(&p))
}

#[tokio::test]
async fn an_expired_v3_request_is_rejected() {
    let s = TestServer::start().await;
    let r = s
        .send(Method::GET, &v3_with_expires(&expires_in(-5)), None, &[])
        .await;
    assert_credentials_401(&r, "listZones");
}

#[tokio::test]
async fn v3_accepts_rfc3339_expires_and_rejects_garbage_expires() {
    let s = TestServer::start().await;
    let future = jiff::Timestamp::now().as_second() + 600;
    let rfc = jiff::Timestamp::from_second(future)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    s.send(Method::GET, &v3_with_expires(&rfc), None, &[])
        .await
        .ok("listZones");
    let r = s
        .send(Method::GET, &v3_with_expires("tomorrow"), None, &[])
        .await;
    assert_credentials_401(&r, "listZones");
}

#[tokio::test]
async fn a_bad_signature_an_unknown_key_or_a_missing_signature_give_the_same_401() {
    let s = TestServer::start().await;
    let bad_secret = Creds {
        api_key: ADMIN_API_KEY.into(),
        secret_key: "wrong".into(),
    };
    assert_credentials_401(
        &s.client(bad_secret).call("listZones", &[]).await,
        "listZones",
    );
    let unknown = Creds {
        api_key: "nobody".into(),
        secret_key: ADMIN_SECRET_KEY.into(),
    };
    assert_credentials_401(&s.client(unknown).call("listZones", &[]).await, "listZones");
    let r = s
        .send(
            Method::GET,
            &format!("/client/api?command=listZones&response=json&apiKey={ADMIN_API_KEY}"),
            None,
            &[],
        )
        .await;
    assert_credentials_401(&r, "listZones");
    let r = s
        .send(
            Method::GET,
            "/client/api?command=listZones&response=json",
            None,
            &[],
        )
        .await;
    assert_credentials_401(&r, "listZones");
}

#[tokio::test]
async fn a_tampered_parameter_breaks_the_signature() {
    let s = TestServer::start().await;
    let mut p = signed_params(&s.admin().creds, "listZones", &[("name", "zone1")]);
    p[0].1 = "other".into();
    let r = s
        .send(
            Method::GET,
            &format!("/client/api?{}", query_string(&p)),
            None,
            &[],
        )
        .await;
    assert_credentials_401(&r, "listZones");
}

#[tokio::test]
async fn an_unknown_command_is_an_errorresponse() {
    let s = TestServer::start().await;
    let r = s.admin().call("noSuchCommand", &[]).await;
    let text = r.err("error", 432);
    assert!(text.contains("noSuchCommand"), "{text}");
}

#[tokio::test]
async fn a_user_calling_an_admin_command_gets_401_not_available() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice", "User", None).await;
    let r = s.client(alice).call("createZone", &[("name", "z9")]).await;
    assert_eq!(
        r.err("createZone", 401),
        "The given command 'createZone' either does not exist, is not available for user."
    );
}

#[tokio::test]
async fn login_is_post_only_and_bad_credentials_give_531() {
    let s = TestServer::start().await;
    let r = s
        .send(
            Method::GET,
            "/client/api?command=login&username=admin&password=x&response=json",
            None,
            &[],
        )
        .await;
    assert_eq!(
        r.err("login", 405),
        "Please use HTTP POST to authenticate using this API"
    );
    let r = s
        .send(
            Method::POST,
            "/client/api?command=login&username=admin&password=wrong&domain=/&response=json",
            None,
            &[],
        )
        .await;
    r.err("login", 531);
}

#[tokio::test]
async fn a_session_from_login_authenticates_later_requests_until_logout() {
    let s = TestServer::start().await;
    let r = s
        .send(
            Method::POST,
            &format!("/client/api?command=login&username=admin&password={ADMIN_PASSWORD}&domain=/&response=json"),
            None,
            &[],
        )
        .await;
    let login = r.ok("login");
    let key = login["sessionkey"]
        .as_str()
        .expect("sessionkey")
        .to_string();
    assert_eq!(login["username"], "admin");
    assert_eq!(login["account"], "admin");
    let cookies: Vec<String> = r
        .set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap_or("").to_string())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("JSESSIONID=")),
        "{cookies:?}"
    );
    assert!(
        cookies.contains(&format!("sessionkey={key}")),
        "{cookies:?}"
    );
    let cookie_header = cookies.join("; ");
    let uri = format!(
        "/client/api?command=listZones&response=json&sessionkey={}&signatureversion=3&expires={}",
        encode(&key),
        encode(&expires_in(600))
    );
    s.send(Method::GET, &uri, None, &[("cookie", &cookie_header)])
        .await
        .ok("listZones");
    // A wrong session key is refused.
    let r = s
        .send(
            Method::GET,
            "/client/api?command=listZones&response=json&sessionkey=nope",
            None,
            &[],
        )
        .await;
    assert_credentials_401(&r, "listZones");
    let out = s
        .send(
            Method::GET,
            &format!(
                "/client/api?command=logout&response=json&sessionkey={}",
                encode(&key)
            ),
            None,
            &[],
        )
        .await;
    assert_eq!(out.ok("logout")["description"], "success");
    let r = s
        .send(Method::GET, &uri, None, &[("cookie", &cookie_header)])
        .await;
    assert_credentials_401(&r, "listZones");
}
