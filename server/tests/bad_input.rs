//! The bad-input catalogue: every entry gets a clear error, and nothing is
//! stored, changed or lost. (Ids, owners and groups of the wrong shape, and
//! requests over the size limit, are in `allocation.rs`; damaged records
//! and foreign format versions in `persistence.rs`.)
//!
//! Needs root: it mounts small tmpfs file systems for the unwritable and
//! full-disk cases.

mod common;

use std::path::Path;
use std::process::Command;

use common::{code, TestDaemon};
use mcs_client::{proto, Allocate, Client};
use tonic::Code;

fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the bad-input catalogue mounts tmpfs file systems and must run as root"
    );
}

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn snapshot(c: &mut Client) -> (proto::StatsResponse, Vec<proto::Allocation>) {
    let stats = c.stats().await.unwrap();
    let mut stream = c.list(proto::ListRequest::default()).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        all.extend(chunk.allocations);
    }
    (stats, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_levels_and_reservations_change_nothing() {
    let d = TestDaemon::start("c0.c1023");
    let mut c = d.client().await;
    c.allocate(Allocate::new("keep")).await.unwrap();
    c.reserve("c7").await.unwrap();
    let before = snapshot(&mut c).await;
    // Each refusal names the input and says what is wrong with it.
    let syntax = |level: &str| format!("{level:?} is not a level of the form s0:cX,cY");
    let bad = [
        (
            "s0:c5,c5",
            "\"s0:c5,c5\" names c5 twice: a pair needs two different categories".to_owned(),
        ),
        (
            "s0:c9,c1",
            "\"s0:c9,c1\" is not canonical: write the lower category first (s0:c1,c9)".to_owned(),
        ),
        (
            "s1:c1,c2",
            "sensitivity \"s1\" is not supported: mcsd hands out MCS levels, which are always s0"
                .to_owned(),
        ),
        (
            "s0:c1024,c1",
            "category c1024 is out of bounds: categories go from c0 to c1023".to_owned(),
        ),
        ("garbage", syntax("garbage")),
        ("s0:c1", syntax("s0:c1")),
        ("s0:c1,c2,c3", syntax("s0:c1,c2,c3")),
        ("s0:c1.c3", syntax("s0:c1.c3")),
        ("s0:c-1,c2", syntax("s0:c-1,c2")),
        ("s0:c1,c2 ", syntax("s0:c1,c2 ")),
        ("s0:c01,c2", syntax("s0:c01,c2")),
        ("s0:c1,\u{0}c2", syntax("s0:c1,\u{0}c2")),
    ];
    for (level, hint) in bad {
        let err = c
            .allocate(Allocate::new("new").level(level))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{level:?}: {err}");
        assert!(err.to_string().contains("level"), "{level:?}: {err}");
        assert!(err.to_string().contains(&hint), "{level:?}: {err}");
        assert_eq!(
            code(c.reserve(level).await),
            Code::InvalidArgument,
            "{level:?}"
        );
        assert_eq!(
            code(c.unreserve(level).await),
            Code::InvalidArgument,
            "{level:?}"
        );
    }
    for category in ["c1024", "c", "cx", "7", "c-1", ""] {
        assert_eq!(
            code(c.reserve(category).await),
            Code::InvalidArgument,
            "{category:?}"
        );
    }
    assert_eq!(snapshot(&mut c).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_non_ascii_characters_are_refused_in_every_field() {
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    for bad in [
        "\u{7}bell",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "tab\there",
        "ünïcode",
        "emoji😀",
        "zero\u{200b}width",
    ] {
        for (field, request) in [
            ("container_id", Allocate::new(bad)),
            ("owner", Allocate::new("ok").owner(bad)),
            ("group", Allocate::new("ok").group(bad)),
        ] {
            let err = c.allocate(request).await.unwrap_err();
            assert_eq!(err.code(), Some(Code::InvalidArgument), "{field} {bad:?}");
            assert!(err.to_string().contains(field), "{field} {bad:?}: {err}");
        }
    }
    let s = c.stats().await.unwrap();
    assert_eq!((s.held, s.containers), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_levels_outside_the_range_or_reserved_and_unknown_releases() {
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    c.reserve("s0:c1,c2").await.unwrap();
    let err = c
        .allocate(Allocate::new("a").level("s0:c3,c10"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(
        err.to_string()
            .contains("outside the configured category range c0.c9"),
        "{err}"
    );
    let err = c
        .allocate(Allocate::new("a").level("s0:c1,c2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert!(err.to_string().contains("reserved"), "{err}");
    let err = c.reserve("c10").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    let r = c.release("never-allocated").await.unwrap();
    assert!(!r.released && r.allocation.is_none() && !r.level_freed);
    let s = c.stats().await.unwrap();
    assert_eq!((s.held, s.containers, s.reserved), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_dir_is_refused_with_its_path() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let ro = temp.path().join("ro");
    let _mount = Tmpfs::mount(&ro, "ro,size=1m");
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    d.state = ro.join("state");
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&ro.join("state").display().to_string()),
        "{err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_changes_cleanly_and_loses_nothing() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let small = temp.path().join("small");
    let _mount = Tmpfs::mount(&small, "size=3m");
    let state = small.join("state");
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c1023"]);
    d.state = state;
    d.launch().unwrap();
    let mut c = d.client().await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(c.allocate(Allocate::new(format!("keep{i}"))).await.unwrap());
    }

    // Fill the file system, then allocate until the store cannot write.
    let filler = small.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
    }
    let mut failed = None;
    for i in 0..5000 {
        match c.allocate(Allocate::new(format!("more{i}"))).await {
            Ok(a) => kept.push(a),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a full disk makes allocation fail");
    assert!(
        matches!(
            err.code(),
            Some(Code::Unavailable) | Some(Code::ResourceExhausted)
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    // While the disk stays full, changes keep failing with the reason.
    let err = c.allocate(Allocate::new("while-full")).await.unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");

    // Space returns: everything acknowledged is there, and mcsd works again.
    std::fs::remove_file(&filler).unwrap();
    c.allocate(Allocate::new("after")).await.unwrap();
    for a in &kept {
        assert_eq!(c.get(a.container_id.clone()).await.unwrap().level, a.level);
    }
    assert_eq!(code(c.get("while-full").await), Code::NotFound);
    drop(c);
    d.terminate();
    d.launch().unwrap();
    let mut c = d.client().await;
    for a in &kept {
        assert_eq!(c.get(a.container_id.clone()).await.unwrap().level, a.level);
    }
    let s = c.stats().await.unwrap();
    assert_eq!(s.containers, kept.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_file_is_refused_not_reset() {
    let mut d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("a")).await.unwrap();
    drop(c);
    d.terminate();
    let data = d.state.join("db").join("db");
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&d.state.join("db").display().to_string()),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("never resets"), "{err}");
    // Refusing wrote nothing: a restored file would still be taken as is.
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_files_with_unknown_keys_or_bad_values_are_refused_with_the_line() {
    let temp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[labels]\nprocess = \"a:b:c\"\ncolour = \"red\"\n",
            ":3:",
            "colour",
        ),
        ("\ncategories = \"c0.c2000\"\n", ":2: categories:", "1023"),
        ("[in_use]\nscan = \"yes\"\n", ":2:", "bool"),
        (
            "[auth]\nadmin_groups = [\"no-such-group-mcsd\"]\n",
            ":2: auth.admin_groups:",
            "no group named",
        ),
    ];
    for (text, location, hint) in cases {
        std::fs::write(temp.path().join("mcsd.toml"), text).unwrap();
        let mut d = TestDaemon::in_dir(temp.path(), &[]);
        let err = d.launch().unwrap_err();
        assert!(
            err.contains(&format!("mcsd.toml{location}")),
            "{text:?}: {err}"
        );
        assert!(err.contains(hint), "{text:?}: {err}");
        assert!(
            !temp.path().join("state").exists(),
            "{text:?}: state was created"
        );
    }
}
