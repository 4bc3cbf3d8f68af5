//! mcsd against an etcd that requires TLS client certificates and a
//! password: it connects with the configured files and credentials, and
//! refuses to start, saying why, when any of them is wrong.

mod common;

use std::path::Path;

use common::etcd::{EtcdCluster, TlsFiles};
use common::{TestDaemon, CONFIG};
use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
use mcs_client::Allocate;

/// Locks etcd down as an operator would: a root user, and a user `mcsd`
/// allowed to read and write `/secure/` only.
async fn enable_auth(cluster: &EtcdCluster, tls: &TlsFiles) {
    let read = |p: &Path| std::fs::read(p).unwrap();
    let options = ConnectOptions::new().with_tls(
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&tls.ca)))
            .identity(Identity::from_pem(
                read(&tls.client_cert),
                read(&tls.client_key),
            )),
    );
    let mut admin = etcd_client::Client::connect(cluster.endpoints(), Some(options))
        .await
        .unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("mcsd").await.unwrap();
    admin
        .role_grant_permission("mcsd", Permission::read_write("/secure/").with_prefix())
        .await
        .unwrap();
    admin.user_add("mcsd", "s3cret", None).await.unwrap();
    admin.user_grant_role("mcsd", "mcsd").await.unwrap();
    admin.auth_enable().await.unwrap();
}

/// A daemon in `dir` whose `[store.etcd]` table has `settings` besides the
/// endpoints.
fn daemon(dir: &Path, cluster: &EtcdCluster, settings: &str) -> TestDaemon {
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let config = format!(
        "{CONFIG}[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [{}]\n{settings}",
        endpoints.join(", ")
    );
    std::fs::write(dir.join("mcsd.toml"), config).unwrap();
    TestDaemon::in_dir(dir, &["--categories", "c0.c9"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcsd_uses_tls_client_certificates_and_a_password_and_refuses_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let cluster = EtcdCluster::start_tls(&tls);
    enable_auth(&cluster, &tls).await;
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let files = format!(
        "ca = {:?}\ncert = {:?}\nkey = {:?}\n",
        tls.ca, tls.client_cert, tls.client_key
    );
    let auth = format!("user = \"mcsd\"\npassword_file = {password:?}\n");

    let good = tempfile::tempdir().unwrap();
    let mut d = daemon(
        good.path(),
        &cluster,
        &format!("prefix = \"/secure/\"\n{files}{auth}"),
    );
    d.launch()
        .expect("mcsd starts with the right files and password");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("web")).await.unwrap();
    assert_eq!(c.get("web").await.unwrap().level, a.level);
    d.terminate();

    let cases = [
        (
            "a wrong password",
            format!("prefix = \"/secure/\"\n{files}user = \"mcsd\"\npassword = \"wrong\"\n"),
            "authentication failed",
        ),
        (
            "no client certificate",
            format!("prefix = \"/secure/\"\nca = {:?}\n{auth}", tls.ca),
            "set store.etcd.cert and store.etcd.key",
        ),
        (
            "a prefix the user may not touch",
            format!("prefix = \"/elsewhere/\"\n{files}{auth}"),
            "permission denied",
        ),
        (
            "a CA file that is not there",
            format!("prefix = \"/secure/\"\nca = \"/nonexistent/ca.pem\"\n{auth}"),
            "cannot read the etcd CA /nonexistent/ca.pem",
        ),
    ];
    for (what, settings, expected) in cases {
        let other = tempfile::tempdir().unwrap();
        let err = daemon(other.path(), &cluster, &settings)
            .launch()
            .expect_err(what);
        assert!(err.contains(expected), "{what}: {err}");
        assert!(
            !err.contains("s3cret"),
            "{what}: the password leaked: {err}"
        );
    }
    // Nothing was lost on the way.
    d.launch().unwrap();
    assert_eq!(d.client().await.get("web").await.unwrap().level, a.level);
}
