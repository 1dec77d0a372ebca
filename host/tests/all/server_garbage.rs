//! Whatever arrives, the answer is a well-formed API answer: never 500, never a panic.

use axum::http::Method;
use rand::{Rng, SeedableRng};

use crate::support_api::*;

fn assert_sane(r: &Resp, what: &str) {
    assert!(r.status != 500, "{what}: 500: {}", r.text);
    assert!(
        r.status == 200 || (400..600).contains(&r.status),
        "{what}: {}",
        r.status
    );
    if r.content_type.starts_with("application/json") {
        let obj = r
            .json
            .as_object()
            .unwrap_or_else(|| panic!("{what}: not JSON: {}", r.text));
        assert_eq!(obj.len(), 1, "{what}: {}", r.text);
    }
}

const NASTY: &[&str] = &[
    "",
    " ",
    "%",
    "%zz",
    "\u{0}",
    "'; DROP TABLE vms; --",
    "<x>&",
    "-1",
    "0",
    "99999999999999999999999",
    "true",
    "null",
    "[]",
    "{}",
    "../../etc/passwd",
    "é漢字",
    "a,b,,c",
    "2024-13-45T99:99:99Z",
];

#[tokio::test]
async fn every_command_survives_garbage_in_every_parameter() {
    let s = TestServer::start().await;
    let a = s.admin();
    let commands: Vec<(String, Vec<String>)> = s
        .state
        .registry
        .all()
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.params.iter().map(|p| p.name.clone()).collect(),
            )
        })
        .collect();
    for (cmd, params) in &commands {
        for value in NASTY {
            let all: Vec<(&str, &str)> = params.iter().map(|p| (p.as_str(), *value)).collect();
            let r = a.call(cmd, &all).await;
            assert_sane(&r, &format!("{cmd} with {value:?}"));
            let map_style: Vec<(String, String)> = params
                .iter()
                .map(|p| (format!("{p}[0].key"), value.to_string()))
                .collect();
            let refs: Vec<(&str, &str)> = map_style
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_sane(
                &a.call(cmd, &refs).await,
                &format!("{cmd} map-style {value:?}"),
            );
        }
    }
}

/// method, uri, body, headers
type Case = (
    Method,
    String,
    Option<String>,
    Vec<(&'static str, &'static str)>,
);

#[tokio::test]
async fn malformed_requests_get_api_errors() {
    let s = TestServer::start().await;
    let cases: Vec<Case> = vec![
        (Method::GET, "/client/api".into(), None, vec![]),
        (Method::GET, "/client/api?".into(), None, vec![]),
        (Method::GET, "/client/api?command".into(), None, vec![]),
        (
            Method::GET,
            "/client/api?command=&response=json".into(),
            None,
            vec![],
        ),
        (
            Method::GET,
            "/client/api?%%%=%%%&command=%ff%fe&response=json".into(),
            None,
            vec![],
        ),
        (
            Method::GET,
            "/client/api?command=listZones&response=json&apiKey=&signature=".into(),
            None,
            vec![],
        ),
        (
            Method::GET,
            "/client/api?command=listZones&response=json&apikey=x&signature=y&signatureversion=3"
                .into(),
            None,
            vec![],
        ),
        (
            Method::GET,
            "/client/api?command=listZones&response=json&sessionkey=".into(),
            None,
            vec![("cookie", "sessionkey=a; JSESSIONID=b")],
        ),
        (
            Method::GET,
            "/client/api?command=listZones&response=xml&sessionkey=x".into(),
            None,
            vec![("cookie", ";;;=;==")],
        ),
        (
            Method::PUT,
            "/client/api?command=listZones&response=json".into(),
            None,
            vec![],
        ),
        (
            Method::DELETE,
            "/client/api?command=login&response=json".into(),
            None,
            vec![],
        ),
        (
            Method::POST,
            "/client/api".into(),
            Some("command=login&username=admin&password=".into()),
            vec![("content-type", "application/x-www-form-urlencoded")],
        ),
        (
            Method::POST,
            "/client/api".into(),
            Some("\u{0}\u{1}garbage=&&&==".into()),
            vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )],
        ),
        (
            Method::POST,
            "/client/api?command=login&response=json&domain=%2Fno%2Fsuch&username=a&password=b"
                .into(),
            None,
            vec![],
        ),
        (
            Method::POST,
            "/client/api?command=login&response=json&domainid=not-a-uuid&username=a&password=b"
                .into(),
            None,
            vec![],
        ),
        (
            Method::POST,
            "/client/api?command=logout&response=json".into(),
            None,
            vec![],
        ),
        (
            Method::GET,
            format!(
                "/client/api?command=listZones&response=json&{}",
                "a=b&".repeat(2000)
            ),
            None,
            vec![],
        ),
    ];
    for (method, uri, body, headers) in cases {
        let r = s.send(method.clone(), &uri, body, &headers).await;
        assert_sane(&r, &format!("{method} {}", &uri[..uri.len().min(80)]));
    }
}

#[tokio::test]
async fn random_bytes_in_query_and_body_never_break_the_server() {
    let s = TestServer::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let alphabet = b"abcdefgz=&%+[].0123456789-_~!*'();:@$,/?#\\\"<> ";
    for i in 0..300 {
        let len = rng.random_range(0..200);
        let junk: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect();
        let enc: String = junk
            .bytes()
            .map(|b| {
                if b == b' ' {
                    "%20".to_string()
                } else {
                    (b as char).to_string()
                }
            })
            .collect();
        let uri = format!(
            "/client/api?command={}&response=json&{enc}",
            if i % 2 == 0 {
                "listZones"
            } else {
                "deployVirtualMachine"
            }
        );
        if let Ok(parsed) = uri.parse::<axum::http::Uri>() {
            let r = s
                .send(
                    Method::GET,
                    &parsed.to_string(),
                    Some(junk.clone()),
                    &[("content-type", "application/x-www-form-urlencoded")],
                )
                .await;
            assert_sane(&r, &junk);
        }
    }
}
