//! The CI entry point's gate on the SELinux VM suite (`.ci/vm-gate`): a
//! suite that skipped fails CI unless `MCSD_VM_ALLOW_SKIP=1`, and the
//! suite's own verdict passes through.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(".ci/vm-gate")
}

/// Runs the gate over a stand-in suite: a shell script printing `output`
/// and exiting with `status`.
fn run(output: &str, status: i32, allow_skip: Option<&str>) -> Output {
    let mut command = Command::new(gate());
    command.args([
        "sh",
        "-c",
        &format!("printf '%s\\n' \"$0\"; exit {status}"),
        output,
    ]);
    command.env_remove("MCSD_VM_ALLOW_SKIP");
    if let Some(value) = allow_skip {
        command.env("MCSD_VM_ALLOW_SKIP", value);
    }
    command.output().unwrap()
}

const SKIPPED: &str = "SELINUX-VM: SKIPPED (needs root to install packages)";

#[test]
fn a_skipped_vm_suite_fails_ci_unless_allowed() {
    let out = run(SKIPPED, 0, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(err.contains("MCSD_VM_ALLOW_SKIP=1"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SKIPPED),
        "the suite's reason is shown: {out:?}"
    );
    // The power-cut VM test is gated the same way.
    let power = run("POWER-CUT: SKIPPED (no qemu)", 0, None);
    assert_eq!(power.status.code(), Some(1), "{power:?}");
    // Only the exact value allows it.
    assert_eq!(run(SKIPPED, 0, Some("yes")).status.code(), Some(1));
    let allowed = run(SKIPPED, 0, Some("1"));
    assert!(allowed.status.success(), "{allowed:?}");
    assert!(
        String::from_utf8_lossy(&allowed.stdout).contains("allowed by MCSD_VM_ALLOW_SKIP=1"),
        "{allowed:?}"
    );
}

#[test]
fn the_vm_suites_own_verdict_passes_through() {
    let passed = run("PASS: mcsd runs in mcsd_t", 0, None);
    assert!(passed.status.success(), "{passed:?}");
    // A failing suite fails CI, allowed skips or not.
    let failed = run("SELINUX-VM: FAIL (boot timed out)", 1, Some("1"));
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    // "SKIPPED" inside another line is not the suite's verdict.
    let quoted = run("PASS: a scenario step printed SELINUX-VM: SKIPPED", 0, None);
    assert!(quoted.status.success(), "{quoted:?}");
}
