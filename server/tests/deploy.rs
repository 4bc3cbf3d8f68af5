//! The deployment files: `make install-files` lays out the tree the
//! packages ship, systemd accepts the units, the documented configuration
//! is exactly the defaults, and the RPM spec builds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The directory holding this build's mcsd and mcsctl (mcsctl is built
/// here if this test runs without the rest of the workspace).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mcsd"))
        .parent()
        .unwrap()
        .to_owned();
    if !dir.join("mcsctl").exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "mcs-client", "--bin", "mcsctl"])
            .current_dir(workspace())
            .status()
            .unwrap()
            .success();
        assert!(ok, "building mcsctl failed");
    }
    dir
}

fn install(prefix: &Path, destdir: &Path) {
    let out = Command::new("make")
        .arg("-s")
        .arg("install-files")
        .arg(format!("BIN={}", bin_dir().display()))
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!(
            "SYSCONFDIR={}",
            prefix.with_file_name("etc").display()
        ))
        .current_dir(workspace())
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_install_lays_out_the_package_tree() {
    let dest = tempfile::tempdir().unwrap();
    install(Path::new("/usr"), dest.path());
    let expect = [
        ("usr/bin/mcsd", 0o755),
        ("usr/bin/mcsctl", 0o755),
        ("usr/lib/systemd/system/mcsd.service", 0o644),
        ("usr/lib/systemd/system/mcsd.socket", 0o644),
        ("usr/lib/sysusers.d/mcsd.conf", 0o644),
        ("usr/lib/tmpfiles.d/mcsd.conf", 0o644),
        ("etc/mcsd/mcsd.toml", 0o640),
        ("usr/share/containers/oci/hooks.d/mcsd-release.json", 0o644),
        ("usr/share/man/man8/mcsd.8", 0o644),
        ("usr/share/man/man1/mcsctl.1", 0o644),
        ("usr/share/bash-completion/completions/mcsctl", 0o644),
        ("usr/share/zsh/site-functions/_mcsctl", 0o644),
        ("usr/share/fish/vendor_completions.d/mcsctl.fish", 0o644),
    ];
    for (path, mode) in expect {
        let meta =
            std::fs::metadata(dest.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(meta.len() > 0, "{path} is empty");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            mode,
            "{path}"
        );
    }
    let read = |p: &str| std::fs::read_to_string(dest.path().join(p)).unwrap();
    assert!(read("usr/share/man/man8/mcsd.8").contains(".TH mcsd 8"));
    assert!(read("usr/share/man/man1/mcsctl.1").contains("relabel"));
    assert!(read("usr/share/bash-completion/completions/mcsctl").contains("reconcile"));
    let hook: serde_json::Value =
        serde_json::from_str(&read("usr/share/containers/oci/hooks.d/mcsd-release.json")).unwrap();
    assert_eq!(hook["hook"]["path"], "/usr/bin/mcsctl");
    assert_eq!(hook["stages"][0], "poststop");
}

#[test]
fn systemd_accepts_the_units_and_rates_the_service_ok() {
    let root = tempfile::tempdir().unwrap();
    // Installed under a real prefix, so that ExecStart= points at a binary
    // systemd-analyze can check.
    let prefix = root.path().join("usr");
    install(&prefix, Path::new(""));
    let units = prefix.join("lib/systemd/system");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("mcsd.service"))
        .arg(units.join("mcsd.socket"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(units.join("mcsd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for mcsd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {text}"));
    println!("systemd-analyze security: exposure {score}");
    assert!(
        score <= 2.5,
        "exposure {score} above the 2.5 target:\n{text}"
    );
}

#[test]
fn the_documented_configuration_is_exactly_the_defaults() {
    let documented =
        mcsd::config::Config::from_file(&workspace().join("deploy/mcsd.toml")).unwrap();
    assert_eq!(documented, mcsd::config::Config::default());
    // And it names every key the effective configuration has.
    let text = std::fs::read_to_string(workspace().join("deploy/mcsd.toml")).unwrap();
    for line in mcsd::config::Config::default().to_toml().lines() {
        let key = line
            .trim_start_matches("# ")
            .split([' ', ':'])
            .next()
            .unwrap();
        if key.is_empty() || key.starts_with('[') {
            continue;
        }
        assert!(
            text.contains(&format!("{key} = ")),
            "deploy/mcsd.toml does not document {key}"
        );
    }
}

#[test]
fn the_rpm_spec_builds_a_package_with_every_file() {
    let top = tempfile::tempdir().unwrap();
    let out = Command::new("rpmbuild")
        .args(["-bb", "--build-in-place", "--nodeps"])
        .arg("--define")
        .arg(format!("_topdir {}", top.path().display()))
        .arg("--define")
        .arg(format!("mcsd_bin {}", bin_dir().display()))
        .arg("deploy/mcsd.spec")
        .current_dir(workspace())
        .output()
        .expect("rpmbuild (Debian package rpm)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rpm = walk(top.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "rpm"))
        .expect("an .rpm");
    let list = Command::new("rpm").arg("-qlp").arg(&rpm).output().unwrap();
    let files = String::from_utf8_lossy(&list.stdout);
    for f in [
        "/usr/bin/mcsd",
        "/usr/bin/mcsctl",
        "/usr/lib/systemd/system/mcsd.service",
        "/usr/lib/systemd/system/mcsd.socket",
        "/etc/mcsd/mcsd.toml",
        "/usr/share/containers/oci/hooks.d/mcsd-release.json",
        "/usr/share/man/man8/mcsd.8",
    ] {
        assert!(
            files.lines().any(|l| l.starts_with(f)),
            "{f} missing from {}:\n{files}",
            rpm.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}
