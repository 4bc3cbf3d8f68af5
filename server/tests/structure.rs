//! The source tree's shape, held by `.ci/modgraph`: no import cycle between
//! modules, no file over 400 lines of production code, tonic named only by
//! the modules that carry gRPC. The checker itself is tested on small
//! trees that break each rule, so a checker that stopped seeing a breach
//! fails here rather than passing everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn modgraph(args: &[&str], dirs: &[&Path]) -> Output {
    Command::new("python3")
        .arg(workspace().join(".ci/modgraph"))
        .args(args)
        .args(dirs)
        .output()
        .expect("python3 runs .ci/modgraph")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The modules allowed to name tonic: the gRPC adapter, the connection
/// plumbing, the server's assembly, and the etcd store (its client is gRPC).
const TONIC: &str = "tonic=service,daemon,connection,socket,store::etcd";

#[test]
fn the_server_and_client_hold_the_bounds() {
    let root = workspace();
    let server = modgraph(
        &["--max-lines", "400", "--confine", TONIC],
        &[&root.join("server/src")],
    );
    assert!(server.status.success(), "{}", text(&server));
    // The graph it checked is the real one, not an empty walk.
    let graph = text(&server);
    assert!(graph.contains("daemon -> "), "{graph}");
    assert!(graph.contains("engine -> "), "{graph}");
    // The client is a gRPC client: tonic is its business.
    let client = modgraph(&["--max-lines", "400"], &[&root.join("client/src")]);
    assert!(client.status.success(), "{}", text(&client));
    assert!(text(&client).contains("cli -> "), "{}", text(&client));
}

/// Writes `files` (path, contents) under a fresh directory.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

#[test]
fn a_cycle_between_modules_fails() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b/mod.rs", "mod inner;\n"),
        ("b/inner.rs", "use crate::a::A;\npub struct B;\n"),
    ]);
    let out = modgraph(&[], &[dir.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("CYCLE"), "{}", text(&out));

    // The same tree with one direction removed holds.
    std::fs::write(dir.path().join("b/inner.rs"), "pub struct B;\n").unwrap();
    let out = modgraph(&[], &[dir.path()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_long_file_fails_but_its_tests_do_not_count() {
    let production = "pub fn f() {}\n".repeat(30);
    let tests = format!(
        "#[cfg(test)]\nmod tests {{\n{}}}\n",
        "    fn t() {}\n".repeat(50)
    );
    let dir = tree(&[("lib.rs", &format!("{production}{tests}"))]);
    let out = modgraph(&["--max-lines", "40"], &[dir.path()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = modgraph(&["--max-lines", "20"], &[dir.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("TOO LONG: "), "{}", text(&out));
}

#[test]
fn a_confined_crate_named_elsewhere_fails() {
    let dir = tree(&[
        ("lib.rs", "pub mod service;\npub mod engine;\n"),
        ("service.rs", "use tonic::Status;\n"),
        (
            "engine.rs",
            "pub fn f() -> tonic::Code { tonic::Code::Ok }\n",
        ),
    ]);
    let out = modgraph(&["--confine", "tonic=service"], &[dir.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("engine.rs names tonic"), "{said}");
    assert!(!said.contains("service.rs names tonic"), "{said}");
}
