//! Roles granted by supplementary groups are judged by the groups the
//! caller had when it connected, as the kernel recorded them on the socket
//! — not by whatever `/proc/<pid>/status` says when the call arrives.
//!
//! The callers here are threads of this test process that switch their own
//! credentials (Linux credentials are per thread) before connecting, so the
//! process's status file (the thread-group leader: root, no such group)
//! describes someone else — just as it would after the pid was reused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use hyper_util::rt::TokioIo;
use mcs_proto::v1 as pb;
use mcs_proto::v1::labels_client::LabelsClient;
use mcsd::auth::AuthConfig;
use mcsd::daemon::Daemon;
use rustix::process::{Gid, Uid};
use tonic::transport::{Channel, Endpoint, Uri};

const STRANGER: u32 = 65533;
const ADMIN_GROUP: u32 = 4243;
const READER_GROUP: u32 = 4244;

/// Connects to `socket` from a thread running as `uid`/`gid` with exactly
/// `groups`; the thread ends right after, its stream lives on.
fn connect_as(uid: u32, gid: u32, groups: &[u32], socket: &Path) -> std::os::unix::net::UnixStream {
    let socket = socket.to_owned();
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    std::thread::spawn(move || {
        // Only this thread changes; it cannot get root back, so it exits.
        rustix::thread::set_thread_groups(&groups).expect("setgroups (needs root)");
        let gid = Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
        let uid = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
        std::os::unix::net::UnixStream::connect(&socket).expect("connect")
    })
    .join()
    .unwrap()
}

/// A gRPC client over an already connected stream.
async fn client_over(stream: std::os::unix::net::UnixStream) -> LabelsClient<Channel> {
    stream.set_nonblocking(true).unwrap();
    let stream = Mutex::new(Some(tokio::net::UnixStream::from_std(stream).unwrap()));
    let channel = Endpoint::from_static("http://mcsd.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let stream = stream.lock().unwrap().take();
            async move {
                stream
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the test connection was already used"))
            }
        }))
        .await
        .unwrap();
    LabelsClient::new(channel)
}

fn allocate(id: &str) -> pb::AllocateRequest {
    pb::AllocateRequest {
        container_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_the_ones_the_caller_connected_with() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test switches thread credentials and must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = common::config(
        dir.path(),
        AuthConfig {
            admin_gids: [ADMIN_GROUP].into(),
            reader_gids: [READER_GROUP].into(),
            ..Default::default()
        },
    );
    let daemon = Daemon::start(&config).await.unwrap();
    let socket = config.socket.clone();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    // Admin through a supplementary group it held at connect time, among
    // others (more than one so the whole list is read, not just the first).
    let stream = connect_as(STRANGER, STRANGER, &[100, 200, ADMIN_GROUP], &socket);
    let mut admin = client_over(stream).await;
    let reply = admin
        .allocate(allocate("g1"))
        .await
        .expect("admin by group");
    assert_eq!(
        reply.into_inner().allocation.unwrap().owner,
        format!("uid:{STRANGER}")
    );
    admin.stats(pb::StatsRequest {}).await.expect("admins read");

    // A reader group reads and may not change anything.
    let stream = connect_as(STRANGER, STRANGER, &[READER_GROUP], &socket);
    let mut reader = client_over(stream).await;
    reader
        .stats(pb::StatsRequest {})
        .await
        .expect("reader by group");
    let status = reader.allocate(allocate("g2")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains(&format!(
            "uid {STRANGER} may not call Allocate: it needs the admin role"
        )),
        "{status:?}"
    );

    // Without the groups: refused, for reading too.
    let stream = connect_as(STRANGER, STRANGER, &[], &socket);
    let mut nobody = client_over(stream).await;
    let status = nobody.stats(pb::StatsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("needs the reader role"),
        "{status:?}"
    );

    let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.containers, 1, "only the admin's allocation happened");
    drop((admin, reader, nobody));
    daemon.stop().await.unwrap();
}
