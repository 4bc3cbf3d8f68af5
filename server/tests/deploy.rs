//! The deployment files: `make install-files` lays out the tree the
//! packages ship, the man pages are rendered at build time (the shipped
//! binaries do not link clap_mangen), systemd accepts the units, the
//! documented configuration is exactly the defaults, and the RPM spec
//! builds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `program`, run in the workspace without the variables cargo set for
/// this test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). A cargo it starts
/// (make man, make install-files, rpmbuild's %build) would hand them on to
/// build scripts that rerun when they change (ring's does), rebuilding half
/// the dependency tree now and again at the next cargo build outside.
fn in_workspace(program: &str) -> Command {
    const SET_BY_CARGO: [&str; 7] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    let mut command = Command::new(program);
    command.current_dir(workspace());
    for (name, _) in std::env::vars_os() {
        if SET_BY_CARGO
            .iter()
            .any(|p| name.to_string_lossy().starts_with(p))
        {
            command.env_remove(name);
        }
    }
    command
}

/// The directory holding this build's mcsd and mcsctl (mcsctl is built
/// here if this test runs without the rest of the workspace).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mcsd"))
        .parent()
        .unwrap()
        .to_owned();
    if !dir.join("mcsctl").exists() {
        let ok = in_workspace(env!("CARGO"))
            .args(["build", "-q", "-p", "mcs-client", "--bin", "mcsctl"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building mcsctl failed");
    }
    dir
}

fn install(prefix: &Path, destdir: &Path) {
    let out = in_workspace("make")
        .arg("-s")
        .arg("install-files")
        .arg(format!("BIN={}", bin_dir().display()))
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!(
            "SYSCONFDIR={}",
            prefix.with_file_name("etc").display()
        ))
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
        ("usr/lib/systemd/system/mcsd-follow@.service", 0o644),
        ("usr/lib/sysusers.d/mcsd.conf", 0o644),
        ("usr/lib/tmpfiles.d/mcsd.conf", 0o644),
        ("etc/mcsd/mcsd.toml", 0o640),
        ("usr/share/containers/oci/hooks.d/mcsd-record.json", 0o644),
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
    // No hook may free a label at poststop: podman runs it at every stop,
    // and a stopped container gets its label back at start.
    for entry in std::fs::read_dir(dest.path().join("usr/share/containers/oci/hooks.d")).unwrap() {
        let path = entry.unwrap().path();
        let hook: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            !hook["stages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "poststop"),
            "{} runs at poststop",
            path.display()
        );
    }
    let hook: serde_json::Value =
        serde_json::from_str(&read("usr/share/containers/oci/hooks.d/mcsd-record.json")).unwrap();
    assert_eq!(hook["hook"]["path"], "/usr/bin/mcsctl");
    assert_eq!(hook["hook"]["args"][2], "create-runtime");
    assert_eq!(hook["stages"][0], "createRuntime");
    assert_eq!(hook["when"]["always"], true);
}

/// `make man` renders both pages with the generator examples, as roff
/// that groff reads without a warning.
#[test]
fn make_man_renders_both_pages_as_valid_roff() {
    let pages = tempfile::tempdir().unwrap();
    let out = in_workspace("make")
        .args(["-s", "man"])
        .arg(format!("BIN={}", bin_dir().display()))
        .arg(format!("MANBUILD={}", pages.path().display()))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make man: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (page, title, mentions) in [
        ("mcsd.8", ".TH mcsd 8", "check\\-config"),
        ("mcsctl.1", ".TH mcsctl 1", "relabel"),
    ] {
        let path = pages.path().join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.lines().any(|l| l.starts_with(title)),
            "{page} has no {title} header"
        );
        assert!(
            text.contains(mentions),
            "{page} does not mention {mentions}"
        );
        match Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
        {
            Ok(out) => assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff on {page}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("groff not installed: {page} checked by its .TH header only")
            }
            Err(e) => panic!("groff: {e}"),
        }
    }
}

/// Whether `file` holds `needle` (grep, which is fast on a binary of a
/// few hundred MB).
fn file_contains(file: &Path, needle: &str) -> bool {
    let status = Command::new("grep")
        .args(["-q", "-a", "-F", needle])
        .arg(file)
        .status()
        .unwrap();
    assert!(
        status.code().is_some_and(|c| c <= 1),
        "grep {needle} {file:?}: {status}"
    );
    status.success()
}

/// Only the man page generators use clap_mangen: neither shipped binary
/// depends on it (cargo's graph of normal dependencies) or carries it
/// (no symbol or source path of it in this build's mcsd and mcsctl).
#[test]
fn the_shipped_binaries_do_not_link_clap_mangen() {
    for package in ["mcsd", "mcs-client"] {
        let out = in_workspace(env!("CARGO"))
            .args(["tree", "--locked", "-e", "normal", "-p", package])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            tree.contains("clap v4"),
            "no clap in {package}'s tree:\n{tree}"
        );
        assert!(
            !tree.contains("clap_mangen"),
            "{package} depends on clap_mangen:\n{tree}"
        );
    }
    let bins = bin_dir();
    // The crates they do link show up by name, so an absence means something.
    for (bin, linked) in [("mcsd", "clap_builder"), ("mcsctl", "clap_complete")] {
        let path = bins.join(bin);
        assert!(
            file_contains(&path, linked),
            "{bin} shows no trace of {linked}"
        );
        assert!(
            !file_contains(&path, "clap_mangen"),
            "{} links clap_mangen",
            path.display()
        );
    }
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

/// The packages of one `rpmbuild -ba` of deploy/mcsd.spec, in a temporary
/// _topdir (the source tarball from `make dist`, the binaries from this
/// build).
struct Rpms {
    _top: tempfile::TempDir,
    main: PathBuf,
    selinux: PathBuf,
    source: PathBuf,
}

fn rpmbuild_all() -> Rpms {
    let top = tempfile::tempdir().unwrap();
    let sources = top.path().join("SOURCES");
    std::fs::create_dir_all(&sources).unwrap();
    let out = in_workspace("make")
        .args(["-s", "dist"])
        .arg(format!("DISTDIR={}", sources.display()))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make dist: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = std::time::Instant::now();
    let out = in_workspace("rpmbuild")
        .args(["-ba", "--build-in-place", "--nodeps"])
        .arg("--define")
        .arg(format!("_topdir {}", top.path().display()))
        .arg("--define")
        .arg(format!("mcsd_bin {}", bin_dir().display()))
        .arg("deploy/mcsd.spec")
        .output()
        .expect("rpmbuild (Debian package rpm)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("rpmbuild -ba: {:.1} s", started.elapsed().as_secs_f64());
    let all: Vec<PathBuf> = walk(top.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    let find = |what: &str, pick: &dyn Fn(&str) -> bool| {
        let found: Vec<&PathBuf> = all
            .iter()
            .filter(|p| pick(&p.file_name().unwrap().to_string_lossy()))
            .collect();
        assert_eq!(found.len(), 1, "one {what} package among {all:?}");
        found[0].clone()
    };
    let main = find("mcsd binary", &|n| {
        !n.starts_with("mcsd-selinux-") && !n.ends_with(".src.rpm")
    });
    let selinux = find("mcsd-selinux", &|n| n.starts_with("mcsd-selinux-"));
    let source = find("source", &|n| n.ends_with(".src.rpm"));
    Rpms {
        _top: top,
        main,
        selinux,
        source,
    }
}

/// `rpm -qp` with these arguments, its standard output.
fn rpm_q(rpm: &Path, args: &[&str]) -> String {
    let out = Command::new("rpm")
        .arg("-qp")
        .args(args)
        .arg(rpm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rpm -qp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_rpm_spec_builds_mcsd_mcsd_selinux_and_a_source_package() {
    let rpms = rpmbuild_all();

    // mcsd: everything but the module.
    let files = rpm_q(&rpms.main, &["-l"]);
    for f in [
        "/usr/bin/mcsd",
        "/usr/bin/mcsctl",
        "/usr/lib/systemd/system/mcsd.service",
        "/usr/lib/systemd/system/mcsd.socket",
        "/usr/lib/systemd/system/mcsd-follow@.service",
        "/usr/lib/sysusers.d/mcsd.conf",
        "/usr/lib/tmpfiles.d/mcsd.conf",
        "/etc/mcsd/mcsd.toml",
        "/usr/share/containers/oci/hooks.d/mcsd-record.json",
        "/usr/share/man/man8/mcsd.8",
        "/usr/share/man/man1/mcsctl.1",
    ] {
        assert!(
            files.lines().any(|l| l.starts_with(f)),
            "{f} missing from {}:\n{files}",
            rpms.main.display()
        );
    }
    assert!(
        !files
            .lines()
            .any(|l| l.contains("/selinux/") || l.contains(".pp")),
        "the module belongs in mcsd-selinux, not mcsd:\n{files}"
    );

    // mcsd-selinux: the compressed module and its interface, nothing else.
    let module = "/usr/share/selinux/packages/targeted/mcsd.pp.bz2";
    let files = rpm_q(&rpms.selinux, &["-l"]);
    let expect = [
        module,
        "/usr/share/selinux/devel/include/services/mcsd.if",
        "/var/lib/selinux/targeted/active/modules/200/mcsd",
    ];
    let mut listed: Vec<&str> = files.lines().collect();
    listed.sort_unstable();
    let mut expected = expect.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected, "mcsd-selinux's files");
    // The payload's module is the one `make policy` built, bzip2-compressed.
    let unpacked = tempfile::tempdir().unwrap();
    let ok = Command::new("sh")
        .arg("-c")
        .arg(r#"rpm2cpio "$1" | cpio -idm --quiet"#)
        .arg("sh")
        .arg(&rpms.selinux)
        .current_dir(unpacked.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "rpm2cpio | cpio");
    let out = Command::new("bzip2")
        .arg("-dc")
        .arg(unpacked.path().join(&module[1..]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{module} is not bzip2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        &out.stdout[..4],
        &0xf97c_ff8f_u32.to_le_bytes(),
        "{module} is not a policy package"
    );
    assert!(
        out.stdout == std::fs::read(workspace().join("policy/mcsd.pp")).unwrap(),
        "{module} is not policy/mcsd.pp"
    );

    // Architectures: the module is the same everywhere.
    assert_eq!(rpm_q(&rpms.selinux, &["--qf", "%{ARCH}"]), "noarch");
    assert_ne!(rpm_q(&rpms.main, &["--qf", "%{ARCH}"]), "noarch");

    // Both come from the source package, which holds the spec and tarball.
    let source_name = rpms
        .source
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for rpm in [&rpms.main, &rpms.selinux] {
        assert_eq!(rpm_q(rpm, &["--qf", "%{SOURCERPM}"]), source_name);
    }
    let version = rpm_q(&rpms.main, &["--qf", "%{VERSION}"]);
    let mut sources: Vec<String> = rpm_q(&rpms.source, &["-l"])
        .lines()
        .map(str::to_owned)
        .collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        [format!("mcsd-{version}.tar.gz"), "mcsd.spec".to_owned()]
    );

    check_requires(&rpms);
    check_scriptlets(&rpms);
}

/// What each package requires, as "name [flags] [version]" lines.
fn requires(rpm: &Path) -> Vec<String> {
    rpm_q(
        rpm,
        &[
            "--qf",
            "[%{REQUIRENAME} %{REQUIREFLAGS:deptype} %{REQUIREFLAGS:depflags} %{REQUIREVERSION}\n]",
        ],
    )
    .lines()
    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    .collect()
}

fn check_requires(rpms: &Rpms) {
    let evr = rpm_q(&rpms.main, &["--qf", "%{VERSION}-%{RELEASE}"]);
    let main = requires(&rpms.main);
    let rich = format!("(mcsd-selinux = {evr} if selinux-policy-targeted) manual");
    assert!(
        main.contains(&rich),
        "mcsd does not require {rich}:\n{main:#?}"
    );

    let selinux = requires(&rpms.selinux);
    for need in [
        "policycoreutils post",
        "policycoreutils postun",
        "libselinux-utils post",
    ] {
        assert!(
            selinux.iter().any(|r| r == need),
            "mcsd-selinux does not require {need}:\n{selinux:#?}"
        );
    }
    // The policy version it was built against, where the build host's
    // selinux-policy-devel says (not Debian's rpm).
    let policy = String::from_utf8(
        Command::new("rpm")
            .args(["--eval", "%{?_selinux_policy_version}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let policy = policy.trim();
    let built_against = selinux
        .iter()
        .find(|r| r.starts_with("selinux-policy manual"));
    if policy.is_empty() {
        assert_eq!(built_against, None, "no policy version to require");
    } else {
        assert_eq!(
            built_against.map(String::as_str),
            Some(format!("selinux-policy manual >= {policy}").as_str()),
            "{selinux:#?}"
        );
    }
}

/// Runs a scriptlet with `$1` = `arg` against a stand-in host: the
/// programs under /usr/sbin, /etc/selinux (the targeted policy, SELinux
/// enabled) and /var/lib/rpm-state are replaced by ones in `host`, the
/// programs writing their command lines to `host`/log, which is returned.
fn run_scriptlet(script: &str, arg: u32, host: &Path) -> String {
    let sbin = host.join("sbin");
    if !sbin.exists() {
        std::fs::create_dir_all(&sbin).unwrap();
        for prog in [
            "semodule",
            "load_policy",
            "restorecon",
            "fixfiles",
            "selinuxenabled",
        ] {
            let body = if prog == "selinuxenabled" {
                "exit 0".to_owned()
            } else {
                format!("echo \"{prog} $*\" >> {}/log", host.display())
            };
            let stub = sbin.join(prog);
            std::fs::write(&stub, format!("#!/bin/sh\n{body}\n")).unwrap();
            let mut perms = std::fs::metadata(&stub).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&stub, perms).unwrap();
        }
        let files = host.join("selinux/targeted/contexts/files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(
            files.join("file_contexts"),
            "/usr/bin/mcsd -- system_u:object_r:bin_t:s0\n",
        )
        .unwrap();
        std::fs::write(
            host.join("selinux/config"),
            "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        )
        .unwrap();
        std::fs::create_dir_all(host.join("rpm-state")).unwrap();
    }
    let _ = std::fs::remove_file(host.join("log"));
    let h = host.display();
    let script = script
        .replace("/usr/sbin/", &format!("{h}/sbin/"))
        .replace("/etc/selinux/", &format!("{h}/selinux/"))
        .replace("/var/lib/rpm-state/", &format!("{h}/rpm-state/"));
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .arg("sh")
        .arg(arg.to_string())
        .env("PATH", format!("{h}/sbin:/usr/bin:/bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scriptlet failed with $1={arg}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(host.join("log")).unwrap_or_default()
}

const MCSD_PATHS: [&str; 6] = [
    "/usr/bin/mcsd",
    "/etc/mcsd",
    "/var/lib/mcsd",
    "/run/mcsd",
    "/usr/lib/systemd/system/mcsd.service",
    "/usr/lib/systemd/system/mcsd.socket",
];

/// The log's lines running `prog`, as argument lists.
fn calls<'a>(log: &'a str, prog: &str) -> Vec<Vec<&'a str>> {
    log.lines()
        .filter_map(|l| l.strip_prefix(prog)?.strip_prefix(' '))
        .map(|args| args.split_whitespace().collect())
        .collect()
}

fn has_priority_200(args: &[&str]) -> bool {
    args.windows(2).any(|w| w == ["-X", "200"])
}

/// After `semodule`, a `restorecon -R` of every path mcsd.fc names.
fn assert_relabels_after_semodule(log: &str, when: &str) {
    let semodule = log.lines().position(|l| l.starts_with("semodule "));
    let restorecon = log.lines().position(|l| l.starts_with("restorecon "));
    assert!(
        matches!((semodule, restorecon), (Some(s), Some(r)) if s < r),
        "{when}: no restorecon after semodule:\n{log}"
    );
    let args = &calls(log, "restorecon")[0];
    assert!(
        args.contains(&"-R"),
        "{when}: restorecon not recursive: {args:?}"
    );
    for path in MCSD_PATHS {
        assert!(
            args.contains(&path),
            "{when}: restorecon leaves out {path}: {args:?}"
        );
    }
}

fn check_scriptlets(rpms: &Rpms) {
    let script = |rpm: &Path, tag: &str| rpm_q(rpm, &["--qf", &format!("%{{{tag}}}")]);
    // The module is mcsd-selinux's alone.
    let all_main = rpm_q(&rpms.main, &["--scripts"]);
    assert!(
        !all_main.contains("semodule"),
        "mcsd's scriptlets touch the module:\n{all_main}"
    );

    let host = tempfile::tempdir().unwrap();
    let module = "/usr/share/selinux/packages/targeted/mcsd.pp.bz2";
    let post = script(&rpms.selinux, "POSTIN");
    for (arg, when) in [(1, "install"), (2, "upgrade")] {
        let log = run_scriptlet(&post, arg, host.path());
        let installs = calls(&log, "semodule");
        assert!(
            installs
                .iter()
                .any(|a| has_priority_200(a) && a.windows(2).any(|w| w == ["-i", module])),
            "%post on {when} does not run semodule -X 200 -i {module}:\n{log}\n{post}"
        );
        assert_relabels_after_semodule(&log, &format!("%post on {when}"));
    }

    let postun = script(&rpms.selinux, "POSTUN");
    let log = run_scriptlet(&postun, 1, host.path());
    assert!(
        calls(&log, "semodule").is_empty(),
        "%postun on upgrade touches the module:\n{log}\n{postun}"
    );
    let log = run_scriptlet(&postun, 0, host.path());
    assert!(
        calls(&log, "semodule")
            .iter()
            .any(|a| has_priority_200(a) && a.windows(2).any(|w| w == ["-r", "mcsd"])),
        "%postun on erase does not run semodule -X 200 -r mcsd:\n{log}\n{postun}"
    );
    assert_relabels_after_semodule(&log, "%postun on erase");

    // Around the transaction: the old file contexts kept, then whatever
    // changed relabeled (mcsd's files may be installed before the module).
    let pre = script(&rpms.selinux, "PREIN");
    run_scriptlet(&pre, 1, host.path());
    let kept = host.path().join("rpm-state/file_contexts.pre");
    assert!(kept.exists(), "%pre keeps no file_contexts.pre:\n{pre}");
    let log = run_scriptlet(&script(&rpms.selinux, "POSTTRANS"), 0, host.path());
    assert!(
        calls(&log, "fixfiles")
            .iter()
            .any(|a| a.windows(2).any(|w| w == ["-C", &*kept.to_string_lossy()])),
        "%posttrans does not relabel with fixfiles -C:\n{log}"
    );
    assert!(!kept.exists(), "%posttrans leaves file_contexts.pre behind");
}

/// `rpmspec -q --qf qf` of deploy/mcsd.spec with stand-ins for
/// selinux-policy-devel's macros: each package's name and answer.
fn rpmspec_with_selinux_macros(qf: &str) -> Vec<(String, String)> {
    let out = Command::new("rpmspec")
        .arg("-q")
        .args(["--define", "_selinux_policy_version 41.27-1.fc41"])
        .args([
            "--define",
            "selinux_modules_install(s:p:) semodule fedora-install %{-s*} %{-p*} %*",
        ])
        .args([
            "--define",
            "selinux_modules_uninstall(s:p:) semodule fedora-uninstall %{-s*} %{-p*} %*",
        ])
        .args([
            "--define",
            "selinux_relabel_pre(s:) fixfiles fedora-pre %{-s*}",
        ])
        .args([
            "--define",
            "selinux_relabel_post(s:) fixfiles fedora-post %{-s*}",
        ])
        .args(["--qf", &format!("%{{NAME}}\x1f{qf}\x1e")])
        .arg("deploy/mcsd.spec")
        .current_dir(workspace())
        .output()
        .expect("rpmspec (Debian package rpm)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\x1e')
        .map(|pkg| {
            let (name, answer) = pkg.split_once('\x1f').unwrap();
            (name.to_owned(), answer.to_owned())
        })
        .collect()
}

/// Where selinux-policy-devel's macros exist (Fedora, RHEL), the spec uses
/// them rather than its fallbacks, and records the policy version. Checked
/// by parsing the spec with stand-ins for the macros (no build).
#[test]
fn the_rpm_spec_uses_selinux_policy_devels_macros_where_they_exist() {
    let names: Vec<String> = rpmspec_with_selinux_macros("")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["mcsd", "mcsd-selinux"]);
    let query = |qf: &str| {
        rpmspec_with_selinux_macros(qf)
            .into_iter()
            .find(|(name, _)| name == "mcsd-selinux")
            .unwrap()
            .1
    };
    let host = tempfile::tempdir().unwrap();
    let module = "/usr/share/selinux/packages/targeted/mcsd.pp.bz2";
    let log = run_scriptlet(&query("%{POSTIN}"), 1, host.path());
    assert!(
        log.contains(&format!("semodule fedora-install targeted 200 {module}\n")),
        "%post does not use %selinux_modules_install:\n{log}"
    );
    assert_relabels_after_semodule(&log, "%post");
    let postun = query("%{POSTUN}");
    assert_eq!(
        run_scriptlet(&postun, 1, host.path()),
        "",
        "%postun on upgrade"
    );
    assert!(
        run_scriptlet(&postun, 0, host.path())
            .contains("semodule fedora-uninstall targeted 200 mcsd\n"),
        "%postun on erase does not use %selinux_modules_uninstall"
    );
    assert_eq!(
        run_scriptlet(&query("%{PREIN}"), 1, host.path()),
        "fixfiles fedora-pre targeted\n"
    );
    assert_eq!(
        run_scriptlet(&query("%{POSTTRANS}"), 0, host.path()),
        "fixfiles fedora-post targeted\n"
    );
    let requires = query(
        "[%{REQUIRENAME} %{REQUIREFLAGS:deptype} %{REQUIREFLAGS:depflags} %{REQUIREVERSION}\n]",
    );
    for need in [
        "selinux-policy manual >= 41.27-1.fc41",
        "selinux-policy-base post >= 41.27-1.fc41",
    ] {
        assert!(
            requires
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == need),
            "mcsd-selinux does not require {need}:\n{requires}"
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
