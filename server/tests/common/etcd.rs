//! Real etcd for tests: Debian's `etcd` binary started on loopback ports
//! with temporary data directories, stopped by PID when dropped; and
//! [`Backend`], which starts mcsd on sled or on such an etcd so one
//! behavioural test runs against both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::{TestDaemon, CONFIG};

/// The etcd server binary (`$MCSD_TEST_ETCD`, else Debian's).
fn etcd_binary() -> PathBuf {
    std::env::var_os("MCSD_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// How long a member gets to answer after it starts.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    /// Plain-HTTP port for `/health`, whatever the client URLs speak.
    metrics: u16,
    scheme: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

/// A running etcd cluster of real members.
pub(crate) struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    /// Extra flags for every member (TLS).
    extra: Vec<String>,
    _temp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    /// Ports are picked free and may be taken in between; a start that
    /// fails is retried on new ports.
    pub(crate) fn start(size: usize) -> Self {
        Self::start_with(size, None)
    }

    /// One member serving clients over TLS only, requiring client
    /// certificates signed by `tls.ca`.
    pub(crate) fn start_tls(tls: &TlsFiles) -> Self {
        Self::start_with(1, Some(tls))
    }

    fn start_with(size: usize, tls: Option<&TlsFiles>) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(size, tls) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(size: usize, tls: Option<&TlsFiles>) -> Result<Self, String> {
        let temp = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                metrics: free_port(),
                scheme: if tls.is_some() { "https" } else { "http" },
                dir: temp.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let extra = match tls {
            None => Vec::new(),
            Some(tls) => vec![
                "--cert-file".into(),
                tls.server_cert.display().to_string(),
                "--key-file".into(),
                tls.server_key.display().to_string(),
                "--trusted-ca-file".into(),
                tls.ca.display().to_string(),
                "--client-cert-auth".into(),
            ],
        };
        let mut cluster = Self {
            members,
            initial_cluster,
            extra,
            _temp: temp,
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        for i in 0..size {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial_cluster = self.initial_cluster.clone();
        let extra = self.extra.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} already runs");
        std::fs::create_dir_all(&m.dir).expect("member dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg("mcsd-test")
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", m.metrics))
            .args(&extra)
            // Quick elections: a killed leader is replaced in about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); install Debian's etcd-server package",
                    etcd_binary().display()
                )
            });
        m.child = Some(child);
    }

    /// Waits until member `i` reports itself healthy (it has a leader).
    fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let m = &mut self.members[i];
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                m.child = None;
                return Err(format!("etcd {} exited with {status}: {}", m.name, m.log()));
            }
            if healthy(m.metrics) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd {} not healthy within {READY_WITHIN:?}: {}",
                    m.name,
                    m.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Client URL of member `i`.
    pub(crate) fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// SIGKILL member `i`: no chance to flush or to hand over leadership.
    pub(crate) fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("member runs");
        let pid = Pid::from_raw(child.id() as i32).expect("pid");
        kill_process(pid, Signal::KILL).expect("kill etcd");
        child.wait().expect("wait etcd");
    }

    /// Starts member `i` again on its data and waits until it is healthy.
    pub(crate) fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        if let Err(e) = self.wait_ready(i) {
            panic!("{e}");
        }
    }

    /// Starts mcsd named `node` on every member, under the prefix `/shared/`,
    /// in a fresh temporary directory.
    pub(crate) fn daemon(&self, node: &str, categories: &str) -> TestDaemon {
        let temp = tempfile::tempdir().expect("tempdir");
        let config = format!("{CONFIG}{}", store_config(&self.endpoints(), "/shared/"));
        std::fs::write(temp.path().join("mcsd.toml"), config).expect("write config");
        let mut d = TestDaemon::in_dir(
            temp.path(),
            &["--categories", categories, "--node-name", node],
        );
        d._temp = Some(temp);
        d.launch().expect("mcsd starts");
        d
    }

    /// The log of member `i`, for failure messages.
    pub(crate) fn log(&self, i: usize) -> String {
        self.members[i].log()
    }
}

/// Asks `GET /health` of the member on `port`: true once it has a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                if let Some(pid) = Pid::from_raw(child.id() as i32) {
                    let _ = kill_process(pid, Signal::KILL);
                }
                let _ = child.wait();
            }
        }
    }
}

/// TLS material for an etcd serving clients over TLS: a CA, the server's
/// certificate for 127.0.0.1 and a client certificate, all PEM files.
pub(crate) struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh CA and certificates into `dir`.
    pub(crate) fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("localhost");
        let (client_cert, client_key) = leaf("mcsd-client");
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
        }
    }
}

/// The `[store]` table for an etcd at `endpoints` under `prefix`.
pub(crate) fn store_config(endpoints: &[String], prefix: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [{}]\nprefix = {prefix:?}\n",
        endpoints.join(", ")
    )
}

/// Where a test daemon keeps its records.
pub(crate) enum Backend {
    /// The embedded store, in the daemon's temporary directory.
    Sled,
    /// A one-member etcd of the test's own.
    Etcd(EtcdCluster),
}

impl Backend {
    /// A one-member etcd, started now.
    pub(crate) fn etcd() -> Self {
        Backend::Etcd(EtcdCluster::start(1))
    }

    /// The configuration file for a daemon on this backend.
    pub(crate) fn config(&self) -> String {
        match self {
            Backend::Sled => CONFIG.to_owned(),
            Backend::Etcd(cluster) => format!(
                "{CONFIG}{}",
                store_config(&cluster.endpoints(), "/mcsd-test/")
            ),
        }
    }

    /// Starts mcsd on `categories` in a fresh temporary directory.
    pub(crate) fn start(&self, categories: &str) -> TestDaemon {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut d = self.daemon(temp.path(), &["--categories", categories]);
        d._temp = Some(temp);
        d.launch().expect("mcsd starts");
        // Guard against a scenario silently running on the default store.
        let expected = match self {
            Backend::Sled => "store=sled at",
            Backend::Etcd(_) => "store=etcd http://127.0.0.1:",
        };
        assert!(d.log().contains(expected), "not on {expected}: {}", d.log());
        d
    }

    /// A daemon in `dir` on this backend, not started yet.
    pub(crate) fn daemon(&self, dir: &Path, args: &[&str]) -> TestDaemon {
        std::fs::write(dir.join("mcsd.toml"), self.config()).expect("write config");
        TestDaemon::in_dir(dir, args)
    }
}

/// Generates a test per backend from each `async fn(Backend)` named:
/// `both_backends!(scenario)` gives `on_sled::scenario` and
/// `on_etcd::scenario`.
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::etcd::Backend::Sled).await
                }
            )+
        }
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::etcd::Backend::etcd()).await
                }
            )+
        }
    };
}
