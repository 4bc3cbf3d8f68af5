//! Authorization over the real socket: clients run as other uids (through
//! `setpriv`) and get exactly what their role allows; every state-changing
//! call lands in the audit log with the caller's uid and pid.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use mcsd::auth::AuthConfig;
use mcsd::daemon::Daemon;

const NOBODY: u32 = 65534;
const STRANGER: u32 = 65533;
const ADMIN_GROUP: u32 = 4242;

/// Log lines mcsd writes, captured for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs mcsctl as `uid`/`gid` with exactly the supplementary `groups`.
fn mcsctl_as(uid: u32, gid: u32, groups: &[u32], socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(ToString::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(env!("CARGO_BIN_EXE_mcsctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MCSD_SOCKET")
        .output()
        .expect("run setpriv (util-linux)")
}

fn err_line(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected failure, got {o:?}");
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_come_from_peer_credentials_and_changes_are_audited() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test runs clients as other uids and must run as root"
    );
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    // Other uids must reach the socket so that mcsd, not file modes, decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = common::config(
        dir.path(),
        AuthConfig {
            reader_uids: [NOBODY].into(),
            admin_gids: [ADMIN_GROUP].into(),
            ..Default::default()
        },
    );
    let daemon = Daemon::start(&config).await.unwrap();
    let socket = config.socket.clone();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let s = socket.clone();
    tokio::task::spawn_blocking(move || {
        // No role at all: even reading is refused, naming uid and role.
        let e = err_line(&mcsctl_as(STRANGER, STRANGER, &[], &s, &["stats"]));
        assert!(
            e.contains(&format!(
                "uid {STRANGER} may not call Stats: it needs the reader role"
            )),
            "{e}"
        );
        assert!(
            e.contains("permission denied")
                || e.contains("PermissionDenied")
                || e.contains("may not"),
            "{e}"
        );

        // A reader reads, but may not change anything.
        ok(&mcsctl_as(NOBODY, NOBODY, &[], &s, &["stats"]));
        ok(&mcsctl_as(NOBODY, NOBODY, &[], &s, &["list"]));
        let e = err_line(&mcsctl_as(NOBODY, NOBODY, &[], &s, &["allocate", "c1"]));
        assert!(
            e.contains("may not call Allocate: it needs the admin role"),
            "{e}"
        );
        let e = err_line(&mcsctl_as(NOBODY, NOBODY, &[], &s, &["reserve", "c3"]));
        assert!(e.contains("may not call Reserve"), "{e}");

        // Admin through a supplementary group; the owner defaults to its uid.
        let out = ok(&mcsctl_as(
            STRANGER,
            STRANGER,
            &[ADMIN_GROUP],
            &s,
            &["-o", "json", "allocate", "c1"],
        ));
        assert!(
            out.contains(&format!("\"owner\": \"uid:{STRANGER}\"")),
            "{out}"
        );
        // Admin through the primary group too.
        ok(&mcsctl_as(
            STRANGER,
            ADMIN_GROUP,
            &[],
            &s,
            &["release", "c1"],
        ));

        // Root is always admin.
        ok(&mcsctl_as(
            0,
            0,
            &[],
            &s,
            &["allocate", "c2", "--owner", "podman"],
        ));
    })
    .await
    .unwrap();

    // Nothing the refused calls asked for happened.
    let mut client = mcs_client::Client::connect(&socket).await.unwrap();
    assert_eq!(client.stats().await.unwrap().containers, 1);
    assert!(client.reservations().await.unwrap().is_empty());
    daemon.stop().await.unwrap();

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let audit: Vec<&str> = text.lines().filter(|l| l.contains("mcsd::audit")).collect();
    let has = |needle: &[&str]| audit.iter().any(|l| needle.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            "method=\"Allocate\"",
            &format!("uid={STRANGER}"),
            "pid=",
            "subject=\"c1\"",
            "result=\"ok\""
        ]),
        "{audit:#?}"
    );
    assert!(
        has(&["method=\"Release\"", "subject=\"c1\"", "result=\"ok\""]),
        "{audit:#?}"
    );
    assert!(
        has(&["method=\"Allocate\"", "uid=0", "subject=\"c2\""]),
        "{audit:#?}"
    );
    assert!(
        has(&[
            "refused",
            "method=\"Allocate\"",
            &format!("uid={NOBODY}"),
            "needed=admin"
        ]),
        "{audit:#?}"
    );
    assert!(
        has(&["refused", "method=\"Stats\"", &format!("uid={STRANGER}")]),
        "{audit:#?}"
    );
}
