//! The configuration file's parsing, refusals and printing.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::default().apply_toml(text, Path::new("/etc/mcsd/mcsd.toml"))
}

#[test]
fn a_full_file_is_applied() {
    let c = parse(
        "socket = \"/tmp/m.sock\"\nstate_dir = \"/tmp/state\"\ncategories = \"c0.c9\"\n\
         [labels]\nprocess = \"u:r:p_t\"\nfile = \"u:object_r:f_t\"\n",
    )
    .unwrap();
    assert_eq!(c.socket, PathBuf::from("/tmp/m.sock"));
    assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
    assert_eq!(c.range.pairs(), 45);
    assert_eq!(c.process_template.unwrap().to_string(), "u:r:p_t");
    assert_eq!(c.file_template.unwrap().to_string(), "u:object_r:f_t");
}

#[test]
fn the_store_table_selects_the_backend() {
    let c = parse(
        "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
    )
    .unwrap();
    assert!(matches!(c.store, StoreSettings::Etcd(ref e) if e.prefix == "/mcsd/"));
    assert_eq!(parse("").unwrap().store, StoreSettings::Sled);
}

#[test]
fn auth_accepts_numbers_and_names() {
    let c = parse(
        "[auth]\nadmin_uids = [1000, \"root\"]\nadmin_groups = [\"root\"]\n\
         reader_uids = [2000]\nreader_groups = [65534]\n",
    )
    .unwrap();
    assert_eq!(c.auth.admin_uids, [0, 1000].into());
    assert_eq!(c.auth.admin_gids, [0].into());
    assert_eq!(c.auth.reader_uids, [2000].into());
    assert_eq!(c.auth.reader_gids, [65534].into());
    // Container types keep their default when [auth] does not name them.
    assert!(c.auth.container_types.contains("container_t"));
    assert!(!c.auth.container_types.contains("spc_t"));
    assert!(!c.auth.allow_containers);
}

#[test]
fn auth_container_types_replace_the_default_and_allow_containers_switches_off() {
    let c = parse(
        "[auth]\ncontainer_types = [\"container_t\", \"my_sandbox_t\"]\nallow_containers = true\n",
    )
    .unwrap();
    assert_eq!(
        c.auth.container_types,
        ["container_t".to_owned(), "my_sandbox_t".to_owned()].into()
    );
    assert!(c.auth.allow_containers);
    let text = c.to_toml();
    assert!(
        text.contains("container_types = [\"container_t\", \"my_sandbox_t\"]")
            && text.contains("allow_containers = true"),
        "{text}"
    );
    assert_eq!(parse(&text).unwrap(), c, "{text}");
}

#[test]
fn the_effective_configuration_prints_and_parses_back() {
    let c = parse(
        "categories = \"c0.c99\"\nreservations = [\"c5\", \"s0:c1,c2\"]\n\
         [labels]\nprocess = \"u:r:p_t\"\n[relabel]\nallowlist = [\"/srv/vol\"]\nrestore = \"none\"\n\
         [auth]\nadmin_uids = [7]\nreader_groups = [0]\n[metrics]\nlisten = \"127.0.0.1:9464\"\n\
         [connections]\nmax = 100\nper_uid = 10\nadmin_reserve = 5\nhandshake_timeout_ms = 2500\n",
    )
    .unwrap();
    let text = c.to_toml();
    let again = parse(&text).unwrap();
    assert_eq!(again, c, "{text}");
    assert!(text.contains("restore = \"none\""), "{text}");
    assert_eq!(c.connections.per_uid, 10);
    assert_eq!(
        c.connections.handshake_timeout,
        std::time::Duration::from_millis(2500)
    );
}

#[test]
fn the_effective_etcd_store_prints_and_parses_back_without_a_password() {
    let store = "[store]\nbackend = \"etcd\"\n[store.etcd]\n\
                 endpoints = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n\
                 prefix = \"/pool/\"\nca = \"/etc/mcsd/ca.pem\"\ncert = \"/etc/mcsd/c.pem\"\n\
                 key = \"/etc/mcsd/k.pem\"\nuser = \"mcsd\"\n";
    let c = parse(&format!("{store}password_file = \"/etc/mcsd/pw\"\n")).unwrap();
    let text = c.to_toml();
    assert_eq!(parse(&text).unwrap(), c, "{text}");
    assert!(text.contains("timeout_ms = 5000"), "{text}");
    let inline = parse(&format!("{store}password = \"s3cret\"\n")).unwrap();
    let text = inline.to_toml();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("# password: set in the file, not shown"),
        "{text}"
    );
}

#[test]
fn an_empty_file_keeps_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.range, CategoryRange::FULL);
    assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
}

#[test]
fn reconcile_min_age_defaults_to_a_minute_and_is_configurable() {
    assert_eq!(
        parse("").unwrap().reconcile_min_age,
        std::time::Duration::from_secs(60)
    );
    let c = parse("[reconcile]\nmin_age_secs = 5\n").unwrap();
    assert_eq!(c.reconcile_min_age, std::time::Duration::from_secs(5));
    assert!(c.to_toml().contains("[reconcile]\nmin_age_secs = 5\n"));
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "socket = \"/s\"\ncolour = 1\n",
            "/etc/mcsd/mcsd.toml:2:",
            "colour",
        ),
        (
            "\n\ncategories = \"c9.c0\"\n",
            ":3: categories:",
            "reversed",
        ),
        ("categories = 5\n", ":1:", "string"),
        (
            "state_dir = \"relative/dir\"\n",
            ":1: state_dir:",
            "absolute",
        ),
        (
            "[labels]\nprocess = \"nocolons\"\n",
            ":2: labels.process:",
            "user:role:type",
        ),
        ("[labels]\nfile = \"a:b:c\"\nextra = 1\n", ":3:", "extra"),
        ("socket = \n", ":1:", ""),
        (
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"tcp://x:1\"]\n",
            ":4: store.etcd.endpoints:",
            "http://HOST:PORT",
        ),
        (
            "[store]\nbackend = \"zk\"\n",
            ":2: store.backend:",
            "\"zk\"",
        ),
        ("[store]\nengine = 1\n", ":2:", "engine"),
        (
            "[auth]\nadmin_groups = [\"root\",\n  \"no-such-group-mcsd\"]\n",
            ":3: auth.admin_groups:",
            "no group named \"no-such-group-mcsd\"",
        ),
        ("[auth]\nreader_uids = [-1]\n", ":2:", ""),
        ("[auth]\nwriters = [1]\n", ":2:", "writers"),
        (
            "[auth]\ncontainer_types = [\"container_t\",\n  \"system_u:system_r:spc_t\"]\n",
            ":3: auth.container_types:",
            "not an SELinux type name",
        ),
        ("[auth]\nallow_containers = \"yes\"\n", ":2:", ""),
        (
            "[relabel]\nrestore = \"restorecon\"\n",
            ":2: relabel.restore:",
            "original",
        ),
        (
            "[relabel]\nallowlist = [\"/srv\", \"vol\"]\n",
            ":2: relabel.allowlist:",
            "absolute",
        ),
        (
            "[connections]\nper_uid = 0\n",
            ":2: connections.per_uid:",
            "use 1 to",
        ),
        (
            "[connections]\nmax = 10\nadmin_reserve = 10\n",
            ":3: connections.admin_reserve:",
            "less than connections.max (10)",
        ),
        (
            "[connections]\nhandshake_timeout_ms = 5\n",
            ":2: connections.handshake_timeout_ms:",
            "100 to 600000",
        ),
        ("[connections]\nmax = -1\n", ":2:", ""),
        ("[connections]\nidle = 1\n", ":2:", "idle"),
        (
            "[relabel]\nthreads = 5000\n",
            ":2: relabel.threads:",
            "1024",
        ),
        (
            "[reconcile]\n\nmin_age_secs = 100000\n",
            ":3: reconcile.min_age_secs:",
            "at most 86400",
        ),
        ("[reconcile]\nmin_age_secs = -1\n", ":2:", ""),
        ("[reconcile]\nmin_age = 5\n", ":2:", "min_age"),
        (
            "[in_use]\ndocker_root = \"docker\"\n",
            ":2: in_use.docker_root:",
            "absolute",
        ),
    ];
    for (text, location, hint) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(location), "{text:?}: {err}");
        assert!(err.contains(hint), "{text:?}: {err}");
    }
}

/// `[store]` alone, as the store's own tests checked it before the table
/// moved here: errors are shown as `key (line N): message` or, for a
/// syntax error, `line N: message`.
mod store_table {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::Deserialize;

    use super::super::store::StoreSection;
    use crate::store::backend::StoreSettings;
    use crate::store::etcd::{self, Password};

    fn parse(text: &str) -> Result<StoreSettings, String> {
        #[derive(Deserialize)]
        struct File {
            store: StoreSection,
        }
        // Every error starts with where it points: the key a value is
        // refused for, or, for a syntax error, the line (as the
        // configuration reports them).
        let line = |offset: usize| text[..offset].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            format!("line {}: {}", line(at), e.message())
        })?;
        file.store
            .settings()
            .map_err(|e| format!("{} (line {}): {}", e.key, line(e.span.start), e.message))
    }

    #[test]
    fn sled_is_the_default_and_etcd_takes_every_setting() {
        assert_eq!(parse("[store]\n").unwrap(), StoreSettings::Sled);
        assert_eq!(
            parse("[store]\nbackend = \"sled\"\n").unwrap(),
            StoreSettings::Sled
        );
        let s = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\n\
             endpoints = [\"https://10.0.0.1:2379\", \"https://etcd-2.example:2379/\"]\n\
             prefix = \"/clusters/a/mcsd/\"\nca = \"/etc/mcsd/ca.pem\"\n\
             cert = \"/etc/mcsd/c.pem\"\nkey = \"/etc/mcsd/k.pem\"\n\
             user = \"mcsd\"\npassword_file = \"/etc/mcsd/pw\"\ntimeout_ms = 2500\n",
        )
        .unwrap();
        let StoreSettings::Etcd(e) = s else {
            panic!("not etcd")
        };
        assert_eq!(e.endpoints.len(), 2);
        assert_eq!(e.prefix, "/clusters/a/mcsd/");
        let tls = e.tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("/etc/mcsd/ca.pem"));
        assert_eq!(
            tls.identity,
            Some(("/etc/mcsd/c.pem".into(), "/etc/mcsd/k.pem".into()))
        );
        let auth = e.auth.unwrap();
        assert_eq!(auth.user, "mcsd");
        assert_eq!(auth.password, Password::File("/etc/mcsd/pw".into()));
        assert_eq!(e.timeout, Duration::from_millis(2500));

        let plain = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        let StoreSettings::Etcd(p) = plain else {
            panic!("not etcd")
        };
        assert_eq!(p.prefix, etcd::DEFAULT_PREFIX);
        assert_eq!(
            (p.tls, p.auth, p.timeout),
            (None, None, etcd::DEFAULT_TIMEOUT)
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let etcd = |rest: &str| format!("[store]\nbackend = \"etcd\"\n[store.etcd]\n{rest}");
        let ok = "endpoints = [\"http://127.0.0.1:2379\"]\n";
        let tls = "endpoints = [\"https://127.0.0.1:2379\"]\nca = \"/ca.pem\"\n";
        let cases = [
            (
                "[store]\nbackend = \"redis\"\n".to_owned(),
                "store.backend",
                "not a store backend",
            ),
            (
                "[store]\nbackend = \"etcd\"\n".to_owned(),
                "store.backend",
                "needs a [store.etcd]",
            ),
            (
                "[store]\n[store.etcd]\nendpoints = []\n".to_owned(),
                "store.etcd",
                "backend is not \"etcd\"",
            ),
            (etcd(""), "store.etcd.endpoints", "is missing"),
            (etcd("endpoints = []\n"), "store.etcd.endpoints", "is empty"),
            (
                etcd("endpoints = [\"127.0.0.1:2379\"]\n"),
                "store.etcd.endpoints",
                "http://HOST:PORT",
            ),
            (
                etcd("endpoints = [\"http://127.0.0.1\"]\n"),
                "store.etcd.endpoints",
                "a port",
            ),
            (
                etcd("endpoints = [\"http://h:2379/x\"]\n"),
                "store.etcd.endpoints",
                "nothing after",
            ),
            (
                etcd("endpoints = [\"http://a:1\", \"https://b:2\"]\nca = \"/c\"\n"),
                "store.etcd.endpoints",
                "mixes",
            ),
            (
                etcd(&format!("{ok}prefix = \"/mcsd\"\n")),
                "store.etcd.prefix",
                "end with '/'",
            ),
            (
                etcd(&format!("{ok}prefix = \"\"\n")),
                "store.etcd.prefix",
                "non-empty",
            ),
            (
                etcd("endpoints = [\"https://127.0.0.1:2379\"]\n"),
                "store.etcd.ca",
                "need store.etcd.ca",
            ),
            (
                etcd(&format!("{ok}ca = \"/ca.pem\"\n")),
                "store.etcd.endpoints",
                "use https://",
            ),
            (
                etcd(&format!("{tls}ca = \"rel.pem\"\n")),
                "line 6",
                "duplicate key",
            ),
            (
                etcd("endpoints = [\"https://127.0.0.1:2379\"]\nca = \"rel.pem\"\n"),
                "store.etcd.ca",
                "absolute",
            ),
            (
                etcd(&format!("{tls}cert = \"/c.pem\"\n")),
                "store.etcd.cert",
                "set store.etcd.key",
            ),
            (
                etcd(&format!("{tls}key = \"/k.pem\"\n")),
                "store.etcd.key",
                "set store.etcd.cert",
            ),
            (
                etcd(&format!("{ok}user = \"u\"\n")),
                "store.etcd.user",
                "needs a password",
            ),
            (
                etcd(&format!("{ok}password = \"p\"\n")),
                "store.etcd.user",
                "set store.etcd.user",
            ),
            (
                etcd(&format!(
                    "{ok}user = \"u\"\npassword = \"p\"\npassword_file = \"/p\"\n"
                )),
                "store.etcd.password_file",
                "not both",
            ),
            (
                etcd(&format!("{ok}user = \"\"\npassword = \"p\"\n")),
                "store.etcd.user",
                "is empty",
            ),
            (
                etcd(&format!("{ok}timeout_ms = 0\n")),
                "store.etcd.timeout_ms",
                "out of bounds",
            ),
            (
                etcd(&format!("{ok}colour = 1\n")),
                "line 5",
                "unknown field `colour`",
            ),
        ];
        for (text, at, hint) in cases {
            let err = parse(&text).unwrap_err();
            // The whole key (or line), not a prefix of it: "store.etcd"
            // must not pass for "store.etcd.endpoints".
            assert!(
                err.starts_with(&format!("{at}: ")) || err.starts_with(&format!("{at} (line ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(hint), "{text:?}: {err}");
        }
    }
}

#[test]
fn a_refused_value_reads_file_line_key_message() {
    // The whole message, not just its parts: operators and scripts read it.
    let cases = [
        (
            "state_dir = \"relative/dir\"\n",
            "/etc/mcsd/mcsd.toml:1: state_dir: relative/dir is relative; state_dir must be an absolute path",
        ),
        (
            "[store]\nbackend = \"zk\"\n",
            "/etc/mcsd/mcsd.toml:2: store.backend: \"zk\" is not a store backend; use \"sled\" (the default, one host) or \"etcd\" (shared by several hosts)",
        ),
        (
            "[labels]\nfile = \"a:b:c\"\nextra = 1\n",
            "/etc/mcsd/mcsd.toml:3: unknown field `extra`, expected `process` or `file`",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).unwrap_err().to_string(), expected, "{text:?}");
    }
}

#[test]
fn the_keys_not_refused_above_are_refused_at_their_line_too() {
    let cases = [
        ("socket = \"mcsd.sock\"\n", ":1: socket:", "absolute"),
        (
            "\nnode_name = \"a b\"\n",
            ":2: node_name:",
            "not a node name",
        ),
        (
            "reservations = [\"c5\",\n  \"s0:c9\"]\n",
            ":2: reservations:",
            "use s0:cX,cY or cN",
        ),
        (
            "[labels]\nfile = \"nocolons\"\n",
            ":2: labels.file:",
            "user:role:type",
        ),
        (
            "[in_use]\nproc_root = \"proc\"\n",
            ":2: in_use.proc_root:",
            "absolute",
        ),
        (
            "[in_use]\ncontainers_storage = \"storage\"\n",
            ":2: in_use.containers_storage:",
            "absolute",
        ),
        ("[in_use]\nscan = 1\n", ":2:", ""),
        ("[in_use]\nprocs = 1\n", ":2:", "procs"),
        (
            "[metrics]\nlisten = \"0.0.0.0:9464\"\n",
            ":2: metrics.listen:",
            "not a loopback address",
        ),
        (
            "[metrics]\nlisten = \"unix:metrics.sock\"\n",
            ":2: metrics.listen:",
            "must be absolute",
        ),
        ("[metrics]\nport = 1\n", ":2:", "port"),
    ];
    for (text, location, hint) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(location), "{text:?}: {err}");
        assert!(err.contains(hint), "{text:?}: {err}");
    }
}

#[test]
fn every_table_prints_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    let c = parse(&format!(
        "socket = \"/run/m y/m.sock\"\nstate_dir = \"/var/lib/m'\\\"d\"\ncategories = \"c3.c200\"\n\
         node_name = \"node-1.example\"\nreservations = [\"c7\", \"s0:c1,c2\", \"c7\"]\n\
         [labels]\nfile = \"u:object_r:f_t\"\n\
         [relabel]\nallowlist = [\"/srv/a\", \"/srv/b\\nc\"]\nrestore = \"none\"\nthreads = 3\n\
         [auth]\nadmin_uids = [0, 7]\nadmin_groups = [10]\nreader_uids = [2000]\nreader_groups = [0]\n\
         container_types = [\"container_t\"]\nallow_containers = true\n\
         [in_use]\nscan = false\nproc_root = \"/tmp/proc\"\ncontainers_storage = \"/cs\"\ndocker_root = \"/d\"\n\
         [reconcile]\nmin_age_secs = 0\n\
         [metrics]\nlisten = \"unix:/run/mcsd/metrics.sock\"\n\
         [connections]\nmax = 9\nper_uid = 3\nhandshake_timeout_ms = 100\n\
         [store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"https://[::1]:2379\"]\n\
         prefix = \"/a/\"\ntimeout_ms = 1\nca = \"/ca.pem\"\nuser = \"mcsd\"\npassword_file = {:?}\n",
        password.display().to_string()
    ))
    .unwrap();
    // The default admin reserve shrank with the small max.
    assert_eq!(c.connections.admin_reserve, 4);
    assert_eq!(c.reservations.len(), 2);
    let text = c.to_toml();
    let again = parse(&text).unwrap();
    assert_eq!(again, c, "{text}");
    // Printing what was printed changes nothing.
    assert_eq!(again.to_toml(), text);
    assert!(
        text.contains(
            "[labels]\nfile = \"u:object_r:f_t\"\n# process: from the host contexts file"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "user = \"mcsd\"\npassword_file = {:?}\n",
            password.display().to_string()
        )),
        "{text}"
    );
}

#[test]
fn the_default_configuration_prints_every_table_in_the_files_order() {
    let text = Config::default().to_toml();
    let tables: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        tables,
        [
            "[labels]",
            "[relabel]",
            "[auth]",
            "[in_use]",
            "[reconcile]",
            "[metrics]",
            "[connections]",
            "[store]"
        ]
    );
    assert!(
        text.starts_with("socket = \"/run/mcsd/mcsd.sock\"\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\n[labels]\n# process: from the host contexts file, else system_u:system_r:container_t\n\
             # file: from the host contexts file, else system_u:object_r:container_file_t\n\n[relabel]\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\n[store]\nbackend = \"sled\"\n"), "{text}");
    assert_eq!(parse(&text).unwrap(), Config::default(), "{text}");
}
