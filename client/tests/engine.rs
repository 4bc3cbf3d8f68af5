//! `mcsctl engine-args`, `engine-run` and `hook create-runtime` against a
//! real daemon over its socket.
//!
//! The bundles are real podman bundles: config.json is written by this
//! host's `podman create` + `podman init` (a busybox root imported with
//! `podman import`; `init` writes config.json, then crun fails on this host
//! and that is all we need). The host kernel does not enforce SELinux, so
//! podman leaves `process.selinuxLabel` and `linux.mountLabel` out: the
//! tests insert them as podman does under SELinux (the full contexts, same
//! level in both). Without podman the copy of such a config.json in
//! tests/data (podman 4.3.1, made the same way) is used. The OCI state on
//! stdin has the runtime spec's shape (`ociVersion`, `id`, `status`, `pid`,
//! `bundle`, `annotations`), as crun passes it to a createRuntime hook.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

mod common;

use mcsd::config::Config;
use mcsd::daemon::Daemon;
use serde_json::{json, Value};

struct Setup {
    _daemon: Daemon,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

async fn daemon() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        range: "c0.c9".parse().unwrap(),
        ..common::config(dir.path(), Default::default())
    };
    let daemon = Daemon::start(&config).await.unwrap();
    Setup {
        socket: config.socket.clone(),
        _daemon: daemon,
        dir,
    }
}

fn mcsctl(socket: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcsctl"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MCSD_SOCKET");
    fed(&mut command, stdin)
}

/// Runs `command` with `stdin` as its input and collects what it printed.
fn fed(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "mcsctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Exit status 1 and one line on stderr, which is returned.
fn refused(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err
}

/// A config.json from podman itself (see the top of the file).
fn podman_config() -> &'static Value {
    static CONFIG: OnceLock<Value> = OnceLock::new();
    CONFIG.get_or_init(|| match config_from_podman() {
        Ok(v) => v,
        Err(why) => {
            eprintln!(
                "podman could not make a bundle ({why}); using tests/data/podman-4.3.1-config.json"
            );
            let text = include_str!("data/podman-4.3.1-config.json");
            serde_json::from_str(text).unwrap()
        }
    })
}

fn config_from_podman() -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no busybox")?;
    std::fs::create_dir_all(d.join("root/bin")).unwrap();
    std::fs::copy(busybox, d.join("root/bin/busybox")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("busybox", d.join("root/bin/sh")).unwrap();
    // The shipped hooks.d file, its path rewritten as `make install` does.
    let hooks = d.join("hooks.d");
    std::fs::create_dir(&hooks).unwrap();
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/oci-hooks/mcsd-record.json");
    let text = std::fs::read_to_string(shipped).unwrap();
    let text = text.replace("/usr/bin/mcsctl", env!("CARGO_BIN_EXE_mcsctl"));
    std::fs::write(hooks.join("mcsd-record.json"), text).unwrap();
    let run = |args: &[&str]| -> Result<Output, String> {
        Command::new("podman")
            .arg("--hooks-dir")
            .arg(&hooks)
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args)
            .output()
            .map_err(|e| format!("podman: {e}"))
    };
    let tar = d.join("bb.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(d.join("root"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| e.to_string())?;
    assert!(status.success());
    let o = run(&["import", tar.to_str().unwrap(), "localhost/bb"])?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let o = run(&[
        "create",
        "--security-opt",
        "label=level:s0:c1,c2",
        "--annotation",
        "io.mcsd.key=mcsd-0000000000000000",
        "localhost/bb",
        "/bin/sh",
    ])?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    // Writes config.json, then fails in crun on this host.
    let _ = run(&["init", &id])?;
    let path = d.join(format!("storage/vfs-containers/{id}/userdata/config.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = run(&["rm", "-f", &id]);
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// A bundle for container `id`: podman's config.json with the labels at
/// `level` (none: no label, as with SELinux off) and mcsd's key (none:
/// no annotation). Returns the OCI state for the hook's stdin.
fn bundle(dir: &Path, id: &str, level: Option<&str>, key: Option<&str>) -> String {
    let mut config = podman_config().clone();
    assert_eq!(config["annotations"]["io.container.manager"], "libpod");
    let annotations = config["annotations"].as_object_mut().unwrap();
    annotations.remove("io.mcsd.key");
    if let Some(key) = key {
        annotations.insert("io.mcsd.key".into(), json!(key));
    }
    if let Some(level) = level {
        config["process"]["selinuxLabel"] = json!(format!("system_u:system_r:container_t:{level}"));
        config["linux"]["mountLabel"] =
            json!(format!("system_u:object_r:container_file_t:{level}"));
    }
    let bundle = dir.join(id);
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    state(id, &bundle, &config["annotations"])
}

fn state(id: &str, bundle: &Path, annotations: &Value) -> String {
    json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": "creating",
        "pid": 4242,
        "bundle": bundle,
        "annotations": annotations,
    })
    .to_string()
}

fn hook(s: &Setup, stdin: &str) -> Output {
    mcsctl(&s.socket, &["hook", "create-runtime"], stdin)
}

async fn get(s: &Setup, id: &str) -> Option<mcs_client::proto::Allocation> {
    let mut client = mcs_client::Client::connect(&s.socket).await.unwrap();
    client.get(id).await.ok()
}

/// `engine-args` for podman: returns (key, level) from its one line.
fn engine_args(s: &Setup, extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["engine-args"];
    args.extend_from_slice(extra);
    let line = ok(&mcsctl(&s.socket, &args, ""));
    assert_eq!(line.lines().count(), 1, "{line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{line}");
    assert_eq!(words[0], "--security-opt");
    let level = words[1].strip_prefix("label=level:").unwrap().to_owned();
    let key = words[3].strip_prefix("io.mcsd.key=").unwrap().to_owned();
    (words[2].to_owned(), key, level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_args_allocate_a_placeholder_the_hook_hands_to_the_container() {
    let s = daemon().await;
    let (flag, key, level) = engine_args(&s, &[]);
    assert_eq!(flag, "--annotation");
    assert!(key.starts_with("mcsd-") && key.len() == 21, "{key}");
    let placeholder = get(&s, &key).await.expect("placeholder held");
    assert_eq!(
        (placeholder.group.as_str(), placeholder.owner.as_str()),
        (key.as_str(), "podman")
    );
    assert_eq!(placeholder.level, level);

    let id = "2f5d97ed3ed77eea1f107e7c804ad7ef04c4c337a84dad57b1dc73fd63852932";
    let out = ok(&hook(
        &s,
        &bundle(s.dir.path(), id, Some(&level), Some(&key)),
    ));
    assert!(out.contains("placeholder"), "{out}");
    let held = get(&s, id).await.expect("the container holds it");
    assert_eq!(
        (
            held.level.as_str(),
            held.group.as_str(),
            held.owner.as_str()
        ),
        (level.as_str(), key.as_str(), "podman")
    );
    assert!(get(&s, &key).await.is_none(), "placeholder released");

    // A restart: same id, same level, same key.
    ok(&hook(
        &s,
        &bundle(s.dir.path(), id, Some(&level), Some(&key)),
    ));
    assert_eq!(get(&s, id).await.unwrap().level, level);

    // The pair is the container's: a container without the key is refused.
    let e = refused(&hook(
        &s,
        &bundle(s.dir.path(), "other", Some(&level), None),
    ));
    assert!(e.contains(&format!("group {key} (members {id})")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_gets_a_label_and_a_pod_one_level_for_all() {
    let s = daemon().await;
    let o = mcsctl(
        &s.socket,
        &["engine-args", "--engine", "docker", "--key", "k1"],
        "",
    );
    let line = ok(&o);
    let level = get(&s, "k1").await.unwrap().level;
    assert_eq!(
        line.trim(),
        format!("--security-opt label=level:{level} --label io.mcsd.key=k1")
    );
    assert_eq!(get(&s, "k1").await.unwrap().owner, "docker");
    let env = s.dir.path().join("web.env");
    let o = mcsctl(
        &s.socket,
        &[
            "engine-args",
            "--engine",
            "docker",
            "--key",
            "k1",
            "--env-file",
            env.to_str().unwrap(),
        ],
        "",
    );
    let line = ok(&o);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("MCSD_LEVEL={level}\nMCSD_KEY=k1\nMCSD_ARGS={line}")
    );

    let (_, key, pod_level) = engine_args(&s, &["--pod", "web"]);
    assert_eq!(key, "mcsd-pod-web");
    let (_, _, again) = engine_args(&s, &["--pod", "web"]);
    assert_eq!(again, pod_level);
    // Infra (no key: podman 4.3's pod create takes no annotation), then a
    // member with the key, then a second member.
    ok(&hook(
        &s,
        &bundle(s.dir.path(), "infra", Some(&pod_level), None),
    ));
    ok(&hook(
        &s,
        &bundle(s.dir.path(), "m1", Some(&pod_level), Some(&key)),
    ));
    assert!(get(&s, &key).await.is_none(), "placeholder released");
    engine_args(&s, &["--pod", "web"]);
    ok(&hook(
        &s,
        &bundle(s.dir.path(), "m2", Some(&pod_level), Some(&key)),
    ));
    for id in ["infra", "m1", "m2"] {
        let a = get(&s, id).await.unwrap();
        assert_eq!(
            (a.level.as_str(), a.group.as_str()),
            (pod_level.as_str(), key.as_str())
        );
    }
    // Once a keyed member runs, the pod is closed to containers without the key.
    let e = refused(&hook(
        &s,
        &bundle(s.dir.path(), "late", Some(&pod_level), None),
    ));
    assert!(e.contains("mcsd-pod-web"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_the_key_is_recorded_and_guarded() {
    let s = daemon().await;
    let first = bundle(s.dir.path(), "first", Some("s0:c3,c7"), None);
    let out = ok(&hook(&s, &first));
    assert!(
        out.contains("recorded first (s0:c3,c7, owner podman)"),
        "{out}"
    );
    let a = get(&s, "first").await.unwrap();
    assert_eq!((a.owner.as_str(), a.group.as_str()), ("podman", ""));

    // Restart of the same container: not a conflict.
    let out = ok(&hook(&s, &first));
    assert!(out.contains("already holds"), "{out}");

    // Another container at the same level: refused, holder named, advice.
    let e = refused(&hook(
        &s,
        &bundle(s.dir.path(), "second", Some("s0:c3,c7"), None),
    ));
    assert!(
        e.starts_with("mcsctl hook create-runtime: refused second"),
        "{e}"
    );
    assert!(e.contains("held by container first (owner podman)"), "{e}");
    assert!(
        e.contains("podman rm second") && e.contains("mcsctl engine-args"),
        "{e}"
    );
    assert!(get(&s, "second").await.is_none());
    assert_eq!(get(&s, "first").await.unwrap().level, "s0:c3,c7");

    // A key naming a group with another level: refused.
    ok(&mcsctl(&s.socket, &["engine-args", "--key", "kx"], ""));
    let kx = get(&s, "kx").await.unwrap().level;
    let other = if kx == "s0:c0,c1" {
        "s0:c0,c2"
    } else {
        "s0:c0,c1"
    };
    let e = refused(&hook(
        &s,
        &bundle(s.dir.path(), "third", Some(other), Some("kx")),
    ));
    assert!(e.contains(&format!("group kx holds {kx}")), "{e}");

    // Outside mcsd's range (podman draws from c0.c1023): not recorded, runs.
    let out = ok(&hook(
        &s,
        &bundle(s.dir.path(), "far", Some("s0:c100,c200"), None),
    ));
    assert!(out.contains("not recorded"), "{out}");
    // No label at all (SELinux off): nothing to do.
    let out = ok(&hook(&s, &bundle(s.dir.path(), "plain", None, None)));
    assert!(out.contains("nothing to record"), "{out}");
    assert!(get(&s, "plain").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_1() {
    let s = daemon().await;
    let e = refused(&hook(&s, "not json"));
    assert!(e.contains("the OCI state on stdin is not JSON"), "{e}");
    let e = refused(&hook(&s, r#"{"ociVersion":"1.0.2","bundle":"/x"}"#));
    assert!(e.contains("no \"id\""), "{e}");
    let missing = s.dir.path().join("gone");
    let e = refused(&hook(&s, &state("c1", &missing, &json!({}))));
    assert!(
        e.contains(&format!("cannot read {}/config.json", missing.display())),
        "{e}"
    );
    let st = bundle(s.dir.path(), "c2", Some("s0:c1,c2"), None);
    std::fs::write(s.dir.path().join("c2/config.json"), "{\"process\":").unwrap();
    let e = refused(&hook(&s, &st));
    assert!(e.contains("config.json is not JSON"), "{e}");
    let st = bundle(s.dir.path(), "c3", Some("s0:c1,c2"), None);
    let path = s.dir.path().join("c3/config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t");
    std::fs::write(&path, c.to_string()).unwrap();
    let e = refused(&hook(&s, &st));
    assert!(
        e.contains(
            "process.selinuxLabel \"system_u:system_r:container_t\" in config.json has no level"
        ),
        "{e}"
    );
    assert!(get(&s, "c3").await.is_none());
    // Process and mount label at different levels: not what an engine writes.
    c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
    c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0:c1,c3");
    std::fs::write(&path, c.to_string()).unwrap();
    let e = refused(&hook(&s, &st));
    assert!(
        e.contains("process level s0:c1,c2 and mount level s0:c1,c3 differ"),
        "{e}"
    );
    assert!(get(&s, "c3").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcsd_down_refuses_keyed_containers_only() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let keyed = bundle(dir.path(), "keyed", Some("s0:c1,c2"), Some("mcsd-1"));
    let plain = bundle(dir.path(), "plain", Some("s0:c1,c2"), None);
    let e = refused(&mcsctl(&socket, &["hook", "create-runtime"], &keyed));
    assert!(
        e.contains("refused keyed") && e.contains("mcsd is unreachable"),
        "{e}"
    );
    let o = mcsctl(&socket, &["hook", "create-runtime"], &plain);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("started unrecorded at s0:c1,c2"));
    let e = refused(&mcsctl(
        &socket,
        &["hook", "create-runtime", "--require-mcsd"],
        &plain,
    ));
    assert!(e.contains("--require-mcsd"), "{e}");

    // An mcsd that accepts but never answers counts as unreachable.
    let _mute = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let start = std::time::Instant::now();
    let e = refused(&mcsctl(
        &socket,
        &["hook", "create-runtime", "--timeout", "300ms"],
        &keyed,
    ));
    assert!(e.contains("no answer in 300ms"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

/// A caller without the admin role (rootless podman as a plain user) is
/// treated like mcsd being down: keyed containers refused, others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_mcsd_refuses_is_treated_like_mcsd_down() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "runs the hook as nobody"
    );
    let s = daemon().await;
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(s.dir.path(), open.clone()).unwrap();
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let as_nobody = |stdin: &str| {
        fed(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_mcsctl"))
                .arg("--socket")
                .arg(&s.socket)
                .args(["hook", "create-runtime"]),
            stdin,
        )
    };
    let keyed = bundle(s.dir.path(), "keyed", Some("s0:c1,c2"), Some("mcsd-1"));
    let plain = bundle(s.dir.path(), "plain", Some("s0:c1,c2"), None);
    for id in ["keyed", "plain"] {
        std::fs::set_permissions(s.dir.path().join(id), open.clone()).unwrap();
    }
    let e = refused(&as_nobody(&keyed));
    assert!(
        e.contains("refused keyed") && e.contains("mcsd refused this caller"),
        "{e}"
    );
    let o = as_nobody(&plain);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("started unrecorded at s0:c1,c2"));
    assert!(get(&s, "plain").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_run_inserts_the_arguments_after_the_subcommand() {
    let s = daemon().await;
    // A fake podman that prints its arguments.
    let bin = s.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("podman");
    std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_str().unwrap();
    let line = ok(&mcsctl(
        &s.socket,
        &[
            "engine-run",
            "--key",
            "k9",
            "--",
            fake,
            "--root",
            "/r",
            "run",
            "-d",
            "bb",
            "sh",
        ],
        "",
    ));
    let level = get(&s, "k9").await.unwrap().level;
    assert_eq!(
        line.trim(),
        format!(
            "--root /r run --security-opt label=level:{level} --annotation io.mcsd.key=k9 -d bb sh"
        )
    );
    let line = ok(&mcsctl(
        &s.socket,
        &[
            "engine-run",
            "--pod",
            "p",
            "--",
            fake,
            "pod",
            "create",
            "--name",
            "p",
        ],
        "",
    ));
    let level = get(&s, "mcsd-pod-p").await.unwrap().level;
    assert_eq!(
        line.trim(),
        format!("pod create --security-opt label=level:{level} --name p")
    );
    // Not an engine, or no subcommand: one-line error, nothing allocated.
    let o = mcsctl(
        &s.socket,
        &["engine-run", "--key", "k8", "--", fake, "ps"],
        "",
    );
    assert!(refused(&o).contains("no run, create or pod create"));
    assert!(get(&s, "k8").await.is_none());
    // The engine cannot be run: the placeholder is given back.
    let o = mcsctl(
        &s.socket,
        &[
            "engine-run",
            "--key",
            "k7",
            "--",
            "/nonexistent/podman",
            "run",
            "bb",
        ],
        "",
    );
    assert!(refused(&o).contains("cannot run /nonexistent/podman"));
    assert!(get(&s, "k7").await.is_none());
}

/// The bundles above are podman's own: the key given with `--annotation`
/// reaches config.json's annotations, where the hook reads it, and podman
/// accepts the shipped hooks.d file (stage createRuntime, always).
#[test]
fn podman_puts_the_key_annotation_into_config_json() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("no podman on this host; the bundles use tests/data");
        return;
    }
    let config = config_from_podman().expect("podman makes a bundle");
    let a = &config["annotations"];
    assert_eq!(a["io.mcsd.key"], "mcsd-0000000000000000", "{a}");
    assert_eq!(a["io.container.manager"], "libpod");
    assert_eq!(a["io.podman.annotations.label"], "level:s0:c1,c2");
    // podman read deploy/oci-hooks/mcsd-record.json and put the hook in.
    let hook = &config["hooks"]["createRuntime"][0];
    assert_eq!(
        hook["path"],
        env!("CARGO_BIN_EXE_mcsctl"),
        "{}",
        config["hooks"]
    );
    assert_eq!(hook["args"], json!(["mcsctl", "hook", "create-runtime"]));
}
