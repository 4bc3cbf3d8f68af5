//! mcsctl, the binary, against a real daemon: output formats, exit codes,
//! and one-line errors.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use mcsd::config::Config;
use mcsd::daemon::Daemon;
use serde_json::Value;

struct Setup {
    daemon: Option<Daemon>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

async fn daemon(range: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        range: range.parse().unwrap(),
        ..common::config(dir.path(), Default::default())
    };
    let daemon = Daemon::start(&config).await.unwrap();
    Setup {
        socket: config.socket.clone(),
        daemon: Some(daemon),
        _dir: dir,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            // Best effort; the runtime may already be gone.
            drop(d);
        }
    }
}

fn mcsctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcsctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MCSD_SOCKET")
        .output()
        .expect("run mcsctl")
}

/// Waits until the wall clock has moved past the `created_at` mcsd
/// recorded for `id` (milliseconds), so whatever comes next is stamped
/// strictly later: an order the clock guarantees, where a sleep only guesses.
async fn wait_past_creation(socket: &Path, id: &str) {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let mut client = mcs_client::Client::connect(socket).await.unwrap();
    let t = client.get(id).await.unwrap().created_at.unwrap();
    let at = Duration::new(t.seconds as u64, t.nanos as u32).as_millis();
    let deadline = Instant::now() + Duration::from_secs(5);
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        <= at
    {
        assert!(
            Instant::now() < deadline,
            "the clock did not move past {at} ms in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "mcsctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).expect("valid JSON")
}

/// The error contract: exit status 1, nothing on stdout, one line on stderr.
fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "status");
    assert!(
        o.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("mcsctl: "), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_get_release_in_table_and_json() {
    let s = daemon("c0.c9").await;
    let table = stdout(&mcsctl(
        &s.socket,
        &["allocate", "web", "--owner", "podman"],
    ));
    assert!(table.contains("container_id   web"), "{table}");
    assert!(table.contains("owner          podman"), "{table}");
    assert!(
        table.contains("mount_option   context=\"system_u:object_r:container_file_t:s0:c"),
        "{table}"
    );

    let a = json(&mcsctl(
        &s.socket,
        &["-o", "json", "allocate", "web", "--owner", "podman"],
    ));
    assert_eq!(a["created"], false);
    let fields: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    for f in [
        "container_id",
        "owner",
        "group",
        "level",
        "process_label",
        "file_label",
        "mount_option",
        "created_at",
    ] {
        assert!(fields.contains(&f), "missing {f} in {a}");
    }
    let level = a["level"].as_str().unwrap().to_owned();
    assert_eq!(
        a["process_label"],
        format!("system_u:system_r:container_t:{level}")
    );
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));

    let g = json(&mcsctl(&s.socket, &["get", "web", "-o", "json"]));
    assert_eq!(g["level"], level.as_str());

    let r = json(&mcsctl(&s.socket, &["release", "web", "-o", "json"]));
    assert_eq!(
        (r["released"].clone(), r["level_freed"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    let again = stdout(&mcsctl(&s.socket, &["release", "web"]));
    assert!(again.contains("held no allocation"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_exit_status_1() {
    let s = daemon("c0.c9").await;
    let e = one_line_error(&mcsctl(&s.socket, &["allocate", "bad id"]));
    assert!(e.contains("container_id contains ' '"), "{e}");
    let e = one_line_error(&mcsctl(
        &s.socket,
        &["allocate", "x", "--level", "s0:c5,c5"],
    ));
    assert!(e.contains("names c5 twice"), "{e}");
    let e = one_line_error(&mcsctl(&s.socket, &["get", "nobody"]));
    assert!(e.contains("holds no allocation"), "{e}");
    let e = one_line_error(&mcsctl(&s.socket, &["reserve", "c77"]));
    assert!(
        e.contains("outside the configured category range c0.c9"),
        "{e}"
    );
    for i in 0..45 {
        stdout(&mcsctl(&s.socket, &["allocate", &format!("c{i}")]));
    }
    let e = one_line_error(&mcsctl(&s.socket, &["allocate", "full"]));
    assert!(e.contains("no free pair left"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_daemon_is_reported_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mcsd.sock");
    let e = one_line_error(&mcsctl(&missing, &["stats"]));
    assert!(
        e.contains(&format!(
            "cannot connect to {}: is mcsd running?",
            missing.display()
        )),
        "{e}"
    );
    // $MCSD_SOCKET is used when --socket is absent.
    let o = Command::new(env!("CARGO_BIN_EXE_mcsctl"))
        .arg("stats")
        .env("MCSD_SOCKET", &missing)
        .output()
        .unwrap();
    assert!(one_line_error(&o).contains(&missing.display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_stats_and_reservations() {
    let s = daemon("c0.c1023").await;
    for i in 0..1200 {
        let owner = if i < 200 { "crio" } else { "podman" };
        let mut c = mcs_client::Client::connect(&s.socket).await.unwrap();
        c.allocate(mcs_client::Allocate::new(format!("id{i:04}")).owner(owner))
            .await
            .unwrap();
    }
    let all = json(&mcsctl(&s.socket, &["list", "-o", "json"]));
    assert_eq!(all.as_array().unwrap().len(), 1200);
    let crio = json(&mcsctl(
        &s.socket,
        &["list", "--owner", "crio", "-o", "json"],
    ));
    assert_eq!(crio.as_array().unwrap().len(), 200);
    let none = json(&mcsctl(
        &s.socket,
        &["list", "--owner", "nobody", "-o", "json"],
    ));
    assert_eq!(none, Value::Array(vec![]));
    let table = stdout(&mcsctl(&s.socket, &["list", "--owner", "crio"]));
    assert!(table.starts_with("CONTAINER"), "{table}");
    assert_eq!(table.lines().count(), 201);

    let st = json(&mcsctl(&s.socket, &["stats", "-o", "json"]));
    assert_eq!(
        (st["total"].as_u64(), st["held"].as_u64()),
        (Some(523_776), Some(1200))
    );
    assert_eq!(st["owners"][0]["owner"], "crio");
    let st = stdout(&mcsctl(&s.socket, &["stats"]));
    assert!(st.contains("held        1200"), "{st}");

    assert!(
        stdout(&mcsctl(&s.socket, &["reserve", "c7"])).contains("reserved c7: covers 1023 pair(s)")
    );
    let rs = json(&mcsctl(&s.socket, &["reservations", "-o", "json"]));
    assert_eq!(rs[0]["target"], "c7");
    assert!(stdout(&mcsctl(&s.socket, &["unreserve", "c7"])).contains("removed reservation c7"));
    assert!(stdout(&mcsctl(&s.socket, &["unreserve", "c7"])).contains("no reservation c7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_piped_into_a_closed_reader_exits_quietly() {
    let s = daemon("c0.c1023").await;
    let mut c = mcs_client::Client::connect(&s.socket).await.unwrap();
    for i in 0..3000 {
        c.allocate(mcs_client::Allocate::new(format!("id{i}")))
            .await
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcsctl"))
        .args(["--socket", s.socket.to_str().unwrap(), "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("CONTAINER"));
    // stdout is dropped here, like `mcsctl list | head -1`.
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_takes_ids_from_arguments_and_stdin() {
    let s = daemon("c0.c9").await;
    for id in ["a", "b", "c", "d"] {
        stdout(&mcsctl(&s.socket, &["allocate", id, "--owner", "podman"]));
    }
    // Reconcile keeps what was made in the millisecond it starts.
    wait_past_creation(&s.socket, "d").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcsctl"))
        .arg("--socket")
        .arg(&s.socket)
        .args([
            "-o",
            "json",
            "reconcile",
            "--owner",
            "podman",
            "--keep",
            "a",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"b\n  c\n").unwrap();
    let r = json(&child.wait_with_output().unwrap());
    let released: Vec<&str> = r["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["container_id"].as_str().unwrap())
        .collect();
    assert_eq!(released, ["d"]);
    assert_eq!(
        (r["kept"].as_u64(), r["unknown"].as_u64()),
        (Some(3), Some(0))
    );
    let table = stdout(&mcsctl(
        &s.socket,
        &["reconcile", "--owner", "podman", "--dry-run"],
    ));
    assert!(table.contains("would release a ("), "{table}");
    assert!(table.contains("podman: would release 3, kept 0"), "{table}");
    let e = one_line_error(&mcsctl(&s.socket, &["reconcile", "--owner", "bad owner"]));
    assert!(e.contains("owner contains ' '"), "{e}");
}

/// A stale allocation whose volume cannot be restored is named, its pair
/// kept, and mcsctl exits 1 with one line, after printing what it did
/// release. Needs root (mounts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_names_what_it_could_not_release_and_fails() {
    let s = daemon("c0.c9").await;
    for id in ["gone", "stuck"] {
        stdout(&mcsctl(&s.socket, &["allocate", id, "--owner", "podman"]));
    }
    let vol = s._dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    // A label to restore (a root without one is left as is).
    assert!(Command::new("setfattr")
        .args(["-n", "security.selinux", "-v", "system_u:object_r:var_t:s0"])
        .arg(&vol)
        .status()
        .unwrap()
        .success());
    stdout(&mcsctl(
        &s.socket,
        &["relabel", "stuck", &vol.display().to_string()],
    ));
    // The volume can no longer take labels: restoring it must fail.
    assert!(Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&vol)
        .status()
        .unwrap()
        .success());
    let o = mcsctl(&s.socket, &["reconcile", "--owner", "podman"]);
    let _ = Command::new("umount").arg("-l").arg(&vol).status();
    assert_eq!(o.status.code(), Some(1), "status");
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(out.contains("released gone ("), "{out}");
    assert!(out.contains("not released stuck ("), "{out}");
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mcsctl: 1 stale allocation(s) not released, their volumes could not be restored; first: container stuck was not released"),
        "{err}"
    );
    stdout(&mcsctl(&s.socket, &["get", "stuck"]));
}

/// A file hard-linked from outside the volume is named on the summary
/// line with the way to label it anyway; `--hard-links` labels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabel_names_hard_links_left_alone_and_hard_links_labels_them() {
    let s = daemon("c0.c9").await;
    let vol = s._dir.path().join("vol");
    let outside = s._dir.path().join("outside");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::fs::hard_link(outside.join("secret"), vol.join("secret")).unwrap();
    stdout(&mcsctl(&s.socket, &["allocate", "web"]));
    let vol_arg = vol.display().to_string();
    let line = stdout(&mcsctl(&s.socket, &["relabel", "web", &vol_arg]));
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&format!(
            "2 entries, 1 changed, 0 already right, 0 failed, 0 mount(s) not entered, \
             1 hard-linked entries left alone (not all their links are inside; \
             --hard-links labels them anyway; first: {vol_arg}/secret)"
        )),
        "{line}"
    );
    let j = json(&mcsctl(
        &s.socket,
        &["-o", "json", "relabel", "web", &vol_arg],
    ));
    assert_eq!(j["hardlinks_skipped"], 1);
    assert_eq!(j["hardlinks_skipped_paths"][0], format!("{vol_arg}/secret"));
    let line = stdout(&mcsctl(
        &s.socket,
        &["relabel", "web", &vol_arg, "--hard-links"],
    ));
    assert!(
        line.contains("2 entries, 1 changed, 1 already right, 0 failed, 0 mount(s) not entered, 0 hard-linked entries left alone, "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabel_prints_one_summary_line_and_fails_on_refused_roots() {
    let s = daemon("c0.c9").await;
    let vol = s._dir.path().join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/f"), "x").unwrap();
    stdout(&mcsctl(&s.socket, &["allocate", "web"]));
    let vol_arg = vol.display().to_string();
    let line = stdout(&mcsctl(&s.socket, &["relabel", "web", &vol_arg]));
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with(&format!(
            "relabeled {vol_arg} to system_u:object_r:container_file_t:s0:c"
        )),
        "{line}"
    );
    assert!(
        line.contains("3 entries, 3 changed, 0 already right, 0 failed"),
        "{line}"
    );
    let j = json(&mcsctl(
        &s.socket,
        &["-o", "json", "relabel", "web", &vol_arg, "--shared"],
    ));
    assert_eq!(j["label"], "system_u:object_r:container_file_t:s0");
    assert_eq!(j["changed"], 3);
    let e = one_line_error(&mcsctl(&s.socket, &["relabel", "web", "/etc"]));
    assert!(e.contains("/etc is refused"), "{e}");
    let e = one_line_error(&mcsctl(&s.socket, &["relabel", "ghost", &vol_arg]));
    assert!(e.contains("holds no allocation"), "{e}");
    let released = stdout(&mcsctl(&s.socket, &["release", "web"]));
    assert!(
        released.contains(&format!("left {vol_arg} as is"))
            || released.contains(&format!("restored {vol_arg}")),
        "{released}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stats_bar_and_list_sort_limit_wide() {
    let s = daemon("c0.c9").await;
    // Levels pinned so that level order (b, c, a) differs from id order and
    // age order; each created strictly after the one before.
    for (id, owner, level) in [
        ("c", "podman", "s0:c1,c2"),
        ("a", "crio", "s0:c3,c4"),
        ("b", "podman", "s0:c0,c9"),
    ] {
        stdout(&mcsctl(
            &s.socket,
            &["allocate", id, "--owner", owner, "--level", level],
        ));
        wait_past_creation(&s.socket, id).await;
    }
    let status = stdout(&mcsctl(&s.socket, &["status"]));
    assert!(status.contains("health   SERVING"), "{status}");
    assert!(status.contains("range    c0.c9"), "{status}");
    let j = json(&mcsctl(&s.socket, &["-o", "json", "status"]));
    assert_eq!(j["health"], "SERVING");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));

    // Not a terminal: no color codes, but the bar.
    let stats = stdout(&mcsctl(&s.socket, &["stats"]));
    assert!(stats.contains("usage       [###"), "{stats}");
    assert!(stats.contains("  6.7%"), "{stats}");
    assert!(!stats.contains('\x1b'), "colors off a terminal: {stats:?}");

    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&stdout(&mcsctl(&s.socket, &["list"]))), ["a", "b", "c"]);
    assert_eq!(
        ids(&stdout(&mcsctl(&s.socket, &["list", "--limit", "2"]))),
        ["a", "b"]
    );
    assert_eq!(
        ids(&stdout(&mcsctl(&s.socket, &["list", "--sort", "owner"]))),
        ["a", "b", "c"]
    );
    assert_eq!(
        ids(&stdout(&mcsctl(&s.socket, &["list", "--sort", "age"]))),
        ["b", "a", "c"]
    );
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        ids(&stdout(&mcsctl(&s.socket, &["list", "--node", &host]))).len(),
        3
    );
    assert!(ids(&stdout(&mcsctl(
        &s.socket,
        &["list", "--node", "elsewhere"]
    )))
    .is_empty());
    // The limit applies after sorting: the two newest, not the first two ids.
    assert_eq!(
        ids(&stdout(&mcsctl(
            &s.socket,
            &["list", "--sort", "age", "--limit", "2"]
        ))),
        ["b", "a"]
    );
    let wide = stdout(&mcsctl(&s.socket, &["-o", "wide", "list"]));
    assert!(
        wide.lines().next().unwrap().contains("PROCESS LABEL"),
        "{wide}"
    );
    assert!(
        wide.contains("system_u:system_r:container_t:s0:c"),
        "{wide}"
    );
    assert_eq!(
        ids(&stdout(&mcsctl(&s.socket, &["list", "--sort", "level"]))),
        ["b", "c", "a"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oci_poststop_hook_releases_and_never_fails() {
    let s = daemon("c0.c9").await;
    stdout(&mcsctl(&s.socket, &["allocate", "4f2cbeef"]));
    let hook = |socket: &Path, state: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcsctl"))
            .arg("--socket")
            .arg(socket)
            .args(["hook", "poststop"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(state.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The state JSON runc/crun hand to hooks.
    let state = r#"{"ociVersion":"1.0.2","id":"4f2cbeef","status":"stopped","pid":0,"bundle":"/run/containers/storage/overlay-containers/4f2cbeef/userdata","annotations":{"io.podman.annotations.autoremove":"FALSE"}}"#;
    let out = hook(&s.socket, state);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("released 4f2cbeef (s0:c"),
        "{out:?}"
    );
    assert!(mcsctl(&s.socket, &["get", "4f2cbeef"]).status.code() == Some(1));
    // Again: idempotent.
    let out = hook(&s.socket, state);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("held no label"),
        "{out:?}"
    );
    // mcsd down, or garbage on stdin: reported, exit 0, teardown goes on.
    let out = hook(Path::new("/nonexistent/mcsd.sock"), state);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not released"),
        "{out:?}"
    );
    let out = hook(&s.socket, "not json");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not JSON"),
        "{out:?}"
    );
}

/// Colors appear on a terminal and disappear with NO_COLOR (run under
/// script(1), which gives mcsctl a pseudo-terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colors_only_on_a_terminal_and_never_with_no_color() {
    let s = daemon("c0.c9").await;
    stdout(&mcsctl(&s.socket, &["allocate", "x"]));
    let on_tty = |no_color: bool| {
        let command = format!(
            "{} --socket {} stats",
            env!("CARGO_BIN_EXE_mcsctl"),
            s.socket.display()
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR");
        if no_color {
            script.env("NO_COLOR", "1");
        }
        let out = script.output().expect("script (util-linux/bsdutils)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let colored = on_tty(false);
    assert!(
        colored.contains("\x1b[32m#"),
        "no color on a terminal: {colored:?}"
    );
    let plain = on_tty(true);
    assert!(
        plain.contains("usage") && !plain.contains("\x1b["),
        "NO_COLOR ignored: {plain:?}"
    );
}
