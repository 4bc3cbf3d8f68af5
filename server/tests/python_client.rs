//! A stock Python client (grpcio from PyPI, the gRPC C core that C++, Ruby
//! and PHP share) against the real daemon's socket, with stubs generated
//! from `proto/mcs/v1/mcs.proto` by grpcio-tools at test time.
//!
//! gRPC's C core sends the socket path, percent-encoded (`run%2Fmcsd%2F
//! mcsd.sock`), as `:authority`. h2, the HTTP/2 layer under tonic, refuses
//! that: `h2::server::Peer::convert_poll_message` parses `:authority` with
//! `http::uri::Authority::from_maybe_shared`, whose
//! `validate_authority_bytes` rejects a `%` outside the userinfo
//! (`InvalidPercent`; RFC 3986 would allow it in a reg-name), and the
//! stream is reset with PROTOCOL_ERROR before tonic or mcsd see the
//! request. No h2, hyper or tonic setting changes that (h2 0.4.20 as
//! locked and 0.4.21, hyper 1.12 and 1.13, tonic 0.14.9, http 1.5), so
//! clients set the authority to `localhost`, as the README says. The first test is that
//! documented way; the second records the failure of a default channel, so
//! that the day h2 accepts it this test says so and the README can drop the
//! option.
//!
//! The Python environment is `target/pyenv`, made by `./dev.sh deps` from
//! `tests/python/requirements.txt`; without it these tests fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestDaemon;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate is in the workspace")
        .to_owned()
}

/// The venv's interpreter; panics with what to do when it is missing.
fn python() -> PathBuf {
    let python = workspace().join("target/pyenv/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import grpc, grpc_tools"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with grpcio and grpcio-tools is missing: run ./dev.sh deps, which creates it \
         from tests/python/requirements.txt",
        python.display()
    );
    python
}

/// Generates the Python stubs of the mcs.v1 API into `dir`.
fn generate_stubs(python: &Path, dir: &Path) {
    let out = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(workspace().join("proto/proto"))
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .arg("mcs/v1/mcs.proto")
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        out.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `tests/python/grpc_client.py` did: its exit status and one JSON
/// object per call it made.
struct Run {
    success: bool,
    calls: Vec<Value>,
    stderr: String,
}

impl Run {
    fn call(&self, name: &str) -> &Value {
        self.calls
            .iter()
            .find(|c| c["call"] == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} call in {:?}; stderr: {}",
                    self.calls, self.stderr
                )
            })
    }
}

/// Runs the Python client against `target` with `mode` (`default` or
/// `localhost`).
fn run_client(daemon: &TestDaemon, target: &str, mode: &str) -> Run {
    let python = python();
    let stubs = tempfile::tempdir().expect("tempdir");
    generate_stubs(&python, stubs.path());
    let out = Command::new(&python)
        .arg(workspace().join("tests/python/grpc_client.py"))
        .arg(stubs.path())
        .arg(target)
        .arg(mode)
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let calls = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "bad line {l:?} from the Python client: {e}; stderr: {stderr}; mcsd: {}",
                    daemon.log()
                )
            })
        })
        .collect();
    Run {
        success: out.status.success(),
        calls,
        stderr,
    }
}

#[test]
fn grpcio_with_authority_localhost_allocates_lists_and_releases() {
    let daemon = TestDaemon::start("c0.c9");
    let target = format!("unix:{}", daemon.socket.display());
    let run = run_client(&daemon, &target, "localhost");
    assert!(
        run.success,
        "the Python client failed: {:?}; stderr: {}; mcsd: {}",
        run.calls,
        run.stderr,
        daemon.log()
    );

    let allocated = &run.call("Allocate")["ok"];
    assert_eq!(allocated["created"], true);
    let level = allocated["level"].as_str().expect("a level").to_owned();
    assert!(level.starts_with("s0:c"), "{level}");
    assert_eq!(
        allocated["process_label"],
        format!("system_u:system_r:container_t:{level}")
    );
    assert_eq!(run.call("Get")["ok"]["level"], level.as_str());
    assert_eq!(
        run.call("List")["ok"]["ids"],
        serde_json::json!(["python-grpcio-1"])
    );
    assert_eq!(
        run.call("Stats")["ok"],
        serde_json::json!({"total": 45, "free": 44})
    );
    let released = &run.call("Release")["ok"];
    assert_eq!(
        (
            &released["released"],
            &released["level_freed"],
            &released["level"]
        ),
        (&Value::Bool(true), &Value::Bool(true), &Value::from(level))
    );
}

/// Deterministic: h2 resets every such stream, whatever the timing.
#[test]
fn grpcio_default_channel_is_refused_by_h2_known_failure() {
    let daemon = TestDaemon::start("c0.c9");
    // Both spellings of an absolute path that grpcio accepts.
    for target in [
        format!("unix:{}", daemon.socket.display()),
        format!("unix://{}", daemon.socket.display()),
    ] {
        let run = run_client(&daemon, &target, "default");
        assert!(
            !run.success,
            "a default grpcio channel to {target} now works: h2 accepts the C core's \
             :authority. Make this test expect success and drop `grpc.default_authority` \
             from the README and mcs.proto's comments. Calls: {:?}",
            run.calls
        );
        assert_eq!(
            run.calls,
            [serde_json::json!({
                "call": "Allocate",
                "error": "INTERNAL",
                "details": "Stream removed (RST_STREAM (Received RST_STREAM with error code 1))",
            })],
            "{target}: not h2's PROTOCOL_ERROR reset; stderr: {}",
            run.stderr
        );
    }
    // Nothing reached the service: mcsd allocated nothing.
    let run = run_client(
        &daemon,
        &format!("unix:{}", daemon.socket.display()),
        "localhost",
    );
    assert_eq!(
        run.call("Allocate")["ok"]["created"],
        true,
        "{:?}",
        run.calls
    );
}
