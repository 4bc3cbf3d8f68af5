//! Test harness: runs the real `mcsd` binary on a temporary socket and state
//! directory, so tests talk to it exactly as a runtime would.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub(crate) mod etcd;
pub(crate) mod volume;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mcs_client::Client;
use rustix::process::{kill_process, Pid, Signal};

/// Labels pinned in every test config, so a host contexts file on the test
/// machine cannot change expected strings.
/// The scan of running processes is off, so containers running on the test
/// machine cannot change expected counts.
/// Reconcile's minimum age is 0, so tests judge an allocation as soon as
/// the clock has moved past it (server/tests/reconcile.rs tests the age).
pub(crate) const CONFIG: &str = "[labels]\nprocess = \"system_u:system_r:container_t\"\nfile = \"system_u:object_r:container_file_t\"\n[in_use]\nscan = false\n[reconcile]\nmin_age_secs = 0\n";

/// A running (or stopped) mcsd under test.
pub(crate) struct TestDaemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("mcsd.log")
}

impl TestDaemon {
    /// Starts mcsd on range `categories` in a fresh temporary directory.
    pub(crate) fn start(categories: &str) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut d = Self::in_dir(temp.path(), &["--categories", categories]);
        d._temp = Some(temp);
        d.launch().expect("mcsd starts");
        d
    }

    /// A daemon description for `dir`, not started yet.
    pub(crate) fn in_dir(dir: &Path, args: &[&str]) -> Self {
        let config = dir.join("mcsd.toml");
        if !config.exists() {
            std::fs::write(&config, CONFIG).expect("write config");
        }
        Self {
            child: None,
            dir: dir.to_owned(),
            socket: dir.join("mcsd.sock"),
            state: dir.join("state"),
            config,
            args: args.iter().map(|s| s.to_string()).collect(),
            _temp: None,
        }
    }

    /// Replaces the extra command-line arguments for the next launch.
    pub(crate) fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the process and waits until the socket answers. On failure
    /// returns what mcsd printed.
    pub(crate) fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(log_path(&self.dir)).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcsd"))
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mcsd");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(format!("mcsd exited with {status}: {}", self.log()));
            }
            // Readiness must come from this process: another daemon may
            // already serve the same path.
            if self.log().contains("mcsd is serving")
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("mcsd did not listen within 20 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Everything mcsd logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.dir)).unwrap_or_default()
    }

    /// The running process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A connected client.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect")
    }

    fn signal(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(child.id() as i32).expect("pid");
        kill_process(pid, signal).expect("signal");
        child.wait().expect("wait")
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill(&mut self) {
        self.signal(Signal::KILL);
    }

    /// SIGTERM: graceful shutdown; returns the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM)
    }

    /// SIGKILL then start again on the same state.
    pub(crate) fn crash_and_restart(&mut self) {
        self.kill();
        self.launch().expect("mcsd restarts");
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process of a made-up `/proc` tree (this kernel has no SELinux) that
/// runs at `context`, as the in-use scan reads it.
pub(crate) fn fake_process(proc_root: &Path, pid: u32, context: &str) {
    let dir = proc_root.join(pid.to_string()).join("attr");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("current"), format!("{context}\0")).unwrap();
}

/// The harness configuration with the in-use scan on, over `proc_root`.
pub(crate) fn config_scanning(proc_root: &Path) -> String {
    let config = CONFIG.replace(
        "[in_use]\nscan = false\n",
        &format!(
            "[in_use]\nscan = true\nproc_root = {:?}\n",
            proc_root.display().to_string()
        ),
    );
    assert_ne!(config, CONFIG, "the harness config changed shape");
    config
}

/// The gRPC code of a failed call.
pub(crate) fn code<T: std::fmt::Debug>(result: Result<T, mcs_client::ClientError>) -> tonic::Code {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().expect("a status from mcsd"),
    }
}

/// Waits until the wall clock has moved past `created_at` (mcsd records
/// milliseconds), so whatever mcsd does next is stamped strictly later: an
/// order the clock guarantees, where a sleep of a few ms only guesses.
pub(crate) fn wait_past(created_at: Option<prost_types::Timestamp>) {
    let t = created_at.expect("the allocation has a created_at");
    let at = Duration::new(t.seconds as u64, t.nanos as u32).as_millis();
    let deadline = Instant::now() + Duration::from_secs(5);
    while now_millis() <= at {
        assert!(
            Instant::now() < deadline,
            "the clock did not move past {at} ms in 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis()
}

/// Sends `GET /metrics` on `stream` (TCP or the Unix metrics socket) and
/// returns the whole response, which must be `200 OK`.
pub(crate) fn get_metrics(mut stream: impl std::io::Read + std::io::Write) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}
