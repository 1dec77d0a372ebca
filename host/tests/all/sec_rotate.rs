//! Rotating the key that seals secrets at rest.

use std::os::unix::fs::PermissionsExt;

use crate::bnr_support::*;
use crate::support_api::*;

#[tokio::test]
async fn rotating_the_key_keeps_every_secret_readable_under_the_new_key() {
    let s = start(Installed::Dummy).await;
    let creds = s.create_user("rita", "User", None).await;
    let cluster = crate::server_kvm::add_cluster(&s, "c1").await;
    crate::server_kvm::add_host(&s, &cluster, "10.1.1.5", "kvm1").await;
    let key_file = s.dir.path().join("bnr.key");
    let old_key = std::fs::read(&key_file).expect("key file");
    let dir = s.dir.path().to_path_buf();
    let TestServer {
        dir: tmp,
        state,
        router,
        ..
    } = s;
    drop(router);
    drop(state);
    bnr::store::secrets::rotate_key(&dir).expect("rotation");
    let new_key = std::fs::read(&key_file).expect("key file");
    assert_ne!(old_key, new_key);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let s = start_in(tmp, Installed::Dummy).await;
    s.client(creds).call("listZones", &[]).await.ok("listZones");
    s.admin().call("listZones", &[]).await.ok("listZones");
    // The host's SSH password was re-sealed too.
    let secrets = s.state.store().secrets().clone();
    let login = s
        .state
        .store()
        .read(move |c| bnr::inventory::kvm::login_by_address(c, &secrets, "10.1.1.5"))
        .await
        .expect("opens under the new key")
        .expect("the host");
    assert_eq!(login.password, crate::server_kvm::HOST_PASSWORD);
}
