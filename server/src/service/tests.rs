//! The one path, checked against the proto: every method of
//! `mcs.v1.Labels` in the service's descriptor is in the role table, is
//! refused (PERMISSION_DENIED, with an audit line) to a caller without its
//! role, and, if it changes state, audits its outcome. A method added to
//! the proto but not to the table, or served without passing through
//! [`LabelService::serve`] or [`LabelService::serve_stream`], fails here.
//!
//! The calls go through the generated server, as the daemon serves them,
//! with the peer a connection would carry set per caller.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use mcs_proto::v1 as pb;
use mcs_proto::v1::labels_client::LabelsClient;
use mcs_proto::v1::labels_server::LabelsServer;
use prost::Message;
use prost_types::MethodDescriptorProto;
use tonic::{Code, Request, Status};

use super::call::METHODS;
use super::{DaemonInfo, LabelService};
use crate::auth::{AuthConfig, Caller, PeerLabel, Policy, Role};
use crate::connection::PeerInfo;
use crate::context::Labels;
use crate::engine::{CommitHook, Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::relabel::{RelabelConfig, Relabeler};
use crate::store::sled::SledStore;
use crate::volumes::Volumes;

const ROOT: u32 = 0;
const READER: u32 = 4001;
const STRANGER: u32 = 4002;

/// The methods of `mcs.v1.Labels` in the compiled descriptor set.
fn descriptor_methods() -> Vec<MethodDescriptorProto> {
    let set = prost_types::FileDescriptorSet::decode(mcs_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let methods: Vec<MethodDescriptorProto> = set
        .file
        .into_iter()
        .filter(|f| f.package() == "mcs.v1")
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "Labels")
        .flat_map(|s| s.method)
        .collect();
    assert!(
        !methods.is_empty(),
        "no mcs.v1.Labels in the descriptor set"
    );
    methods
}

/// The role the one path's table gives `name`.
fn role_of(name: &str) -> Role {
    let found: Vec<_> = METHODS.iter().filter(|m| m.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "{name} is in the proto but {} times in service::call::METHODS: \
         serve it through the one path and list it there once",
        found.len()
    );
    found[0].role
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The audit lines written since the last call.
    fn take_audit(&self) -> Vec<String> {
        let text = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
        text.lines()
            .filter(|l| l.contains("mcsd::audit"))
            .map(str::to_owned)
            .collect()
    }
}

/// The generated server with the peer a connection would give it.
#[derive(Clone)]
struct AsPeer {
    server: LabelsServer<LabelService>,
    peer: PeerInfo,
}

impl tower::Service<http::Request<tonic::body::Body>> for AsPeer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        <LabelsServer<LabelService> as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.server, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.server.call(request)
    }
}

/// A service on a fresh store, its log captured on this thread (the
/// tests run on a current-thread runtime, so spawned producers log here
/// too).
struct Harness {
    service: LabelService,
    log: Captured,
    _log_guard: tracing::subscriber::DefaultGuard,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        let config = EngineConfig {
            range: "c0.c9".parse().unwrap(),
            labels: Labels::default(),
            node: "here".into(),
            on_commit: CommitHook::default(),
        };
        let engine = Engine::start(store, config).await.unwrap();
        let relabeler = Relabeler::new(RelabelConfig::default(), dir.path());
        let relabeler = Arc::new(RwLock::new(Arc::new(relabeler)));
        let volumes = Volumes::new(engine, relabeler, Arc::new(Metrics::new()));
        let auth = AuthConfig {
            reader_uids: [READER].into(),
            ..Default::default()
        };
        let info = DaemonInfo {
            started_at: SystemTime::now(),
            socket: dir.path().join("mcsd.sock"),
            selinux_mode: "disabled".into(),
            serving: Arc::new(AtomicBool::new(true)),
            reconcile_min_age: Duration::from_secs(60),
        };
        let policy = Arc::new(RwLock::new(Policy::new(auth, ROOT)));
        Self {
            service: LabelService::new(volumes, policy, info),
            log,
            _log_guard: log_guard,
            _dir: dir,
        }
    }

    /// The server as `uid` reaches it; `None`: a peer without credentials.
    fn as_peer(&self, uid: Option<u32>) -> AsPeer {
        let caller = uid.map(|uid| {
            Arc::new(Caller {
                uid,
                gid: uid,
                pid: Some(4242),
                groups: Vec::new(),
                label: PeerLabel::None,
            })
        });
        AsPeer {
            server: LabelsServer::new(self.service.clone()),
            peer: PeerInfo { caller },
        }
    }

    /// Calls `method` by its descriptor with an empty message (every field
    /// at its default), as `uid`; the outcome, a stream drained to its end.
    async fn call(&self, uid: Option<u32>, method: &MethodDescriptorProto) -> Result<(), Status> {
        let mut grpc = tonic::client::Grpc::new(self.as_peer(uid));
        grpc.ready().await.unwrap();
        let path = format!("/mcs.v1.Labels/{}", method.name());
        let path = http::uri::PathAndQuery::try_from(path).unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let one = || tokio_stream::iter([()]);
        let mut stream = match (method.client_streaming(), method.server_streaming()) {
            (false, false) => return grpc.unary(Request::new(()), path, codec).await.map(drop),
            (true, false) => {
                let request = Request::new(one());
                return grpc.client_streaming(request, path, codec).await.map(drop);
            }
            (false, true) => grpc.server_streaming(Request::new(()), path, codec).await?,
            (true, true) => grpc.streaming(Request::new(one()), path, codec).await?,
        }
        .into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    }

    fn client(&self, uid: u32) -> LabelsClient<AsPeer> {
        LabelsClient::new(self.as_peer(Some(uid)))
    }
}

/// The refusal of a call that must be refused.
fn must_refuse(name: &str, who: &str, result: Result<(), Status>) -> Status {
    let refused = result.err().unwrap_or_else(|| {
        panic!(
            "{name} answered {who}: serve it through LabelService::serve or serve_stream, \
             which authorize every call"
        )
    });
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "{name}: {refused:?}"
    );
    refused
}

fn has(lines: &[String], needles: &[&str]) -> bool {
    lines.iter().any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn the_role_table_is_exactly_the_protos_methods() {
    let mut proto: Vec<String> = descriptor_methods()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    proto.sort();
    let mut table: Vec<String> = METHODS.iter().map(|m| m.name.to_owned()).collect();
    table.sort();
    assert_eq!(table, proto, "service::call::METHODS against the proto");
}

#[tokio::test]
async fn every_method_is_authorized_and_audited_on_the_one_path() {
    let h = Harness::start().await;
    for method in descriptor_methods() {
        let name = method.name();
        let role = role_of(name);
        let method_field = format!("method=\"{name}\"");

        // A peer without credentials is refused, and the refusal logged.
        let refused = must_refuse(
            name,
            "a peer without credentials",
            h.call(None, &method).await,
        );
        assert!(
            refused
                .message()
                .contains("could not read the caller's credentials"),
            "{name}: {refused:?}"
        );
        let audit = h.log.take_audit();
        assert!(
            has(&audit, &["refused: no peer credentials", &method_field]),
            "{name}: {audit:#?}"
        );

        // A caller with no role is refused, told the role it needs.
        let refused = must_refuse(
            name,
            "a caller with no role",
            h.call(Some(STRANGER), &method).await,
        );
        assert!(
            refused.message().contains(&format!(
                "uid {STRANGER} may not call {name}: it needs the {role} role"
            )),
            "{name}: {refused:?}"
        );
        let audit = h.log.take_audit();
        let needed = format!("needed={role}");
        let uid = format!("uid={STRANGER}");
        assert!(
            has(&audit, &["refused", &method_field, &uid, &needed]),
            "{name}: {audit:#?}"
        );

        // A reader may read and nothing else.
        let read = h.call(Some(READER), &method).await;
        let audit = h.log.take_audit();
        match role {
            Role::Admin => {
                must_refuse(name, "a reader", read);
                assert!(
                    has(&audit, &["refused", &method_field, "needed=admin"]),
                    "{name}: {audit:#?}"
                );
            }
            Role::Reader => {
                let code = read.err().map(|s| s.code());
                assert_ne!(code, Some(Code::PermissionDenied), "{name}");
                assert!(
                    audit.is_empty(),
                    "{name}: a read is not audited: {audit:#?}"
                );
            }
        }

        // Root passes; a state-changing call is audited with its outcome,
        // here the refusal of an empty request.
        let done = h.call(Some(ROOT), &method).await;
        let code = done.as_ref().err().map(Status::code);
        assert_ne!(code, Some(Code::PermissionDenied), "{name}: {done:?}");
        let audit = h.log.take_audit();
        let outcome = has(
            &audit,
            &[&method_field, "uid=0", "pid=", "subject=", "result="],
        );
        match role {
            Role::Admin => assert!(outcome, "{name}: no audit of its outcome: {audit:#?}"),
            Role::Reader => assert!(audit.is_empty(), "{name}: {audit:#?}"),
        }
    }
}

#[tokio::test]
async fn admin_calls_keep_their_words_and_audit_each_outcome() {
    let h = Harness::start().await;
    let mut c = h.client(ROOT);
    let audited = |needles: &[&str]| {
        let audit = h.log.take_audit();
        assert!(has(&audit, needles), "{needles:?} in {audit:#?}");
    };

    // The owner defaults to the caller's uid; the subject is the id.
    let allocated = c
        .allocate(pb::AllocateRequest {
            container_id: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allocated.allocation.unwrap().owner, "uid:0");
    audited(&[
        "method=\"Allocate\"",
        "uid=0",
        "subject=\"c1\"",
        "result=\"ok\"",
    ]);
    let released = c
        .release(pb::ReleaseRequest {
            container_id: "c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(released.released && released.level_freed);
    audited(&["method=\"Release\"", "subject=\"c1\"", "result=\"ok\""]);

    // Relabel refuses a bad id and a missing path before it walks.
    let relabel = |container_id: &str, path: &str| pb::RelabelRequest {
        container_id: container_id.into(),
        path: path.into(),
        ..Default::default()
    };
    let e = c.relabel(relabel("bad id", "/x")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    audited(&[
        "method=\"Relabel\"",
        "subject=\"bad id /x\"",
        "result=InvalidArgument",
    ]);
    let e = c.relabel(relabel("c1", "")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "Relabel needs a path")
    );
    audited(&[
        "method=\"Relabel\"",
        "subject=\"c1 \"",
        "result=InvalidArgument Relabel needs a path",
    ]);

    // Reconcile: the owner comes in the first message and is the subject.
    let reconcile = |owner: &str, min_age_secs: Option<u64>| pb::ReconcileRequest {
        owner: owner.into(),
        min_age_secs,
        dry_run: true,
        ..Default::default()
    };
    let mut refusal = async |messages: Vec<pb::ReconcileRequest>, words: &str, subject: &str| {
        let e = c.reconcile(tokio_stream::iter(messages)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, words));
        let subject = format!("subject=\"{subject}\"");
        audited(&["method=\"Reconcile\"", &subject, "result=InvalidArgument"]);
    };
    refusal(
        vec![],
        "Reconcile needs at least one message naming the owner",
        "",
    )
    .await;
    refusal(
        vec![reconcile("", None)],
        "Reconcile: the first message must name the owner whose allocations are reconciled",
        "",
    )
    .await;
    refusal(
        vec![reconcile("podman", Some(86_401))],
        "Reconcile: min_age_secs 86401 is more than a day (86400)",
        "podman",
    )
    .await;
    refusal(
        vec![reconcile("podman", None), reconcile("crio", None)],
        "Reconcile: a later message names owner \"crio\", but this call reconciles podman",
        "podman",
    )
    .await;
    let done = c
        .reconcile(tokio_stream::iter([reconcile("podman", None)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.min_age_secs, 60);
    audited(&[
        "method=\"Reconcile\"",
        "subject=\"podman\"",
        "result=\"ok\"",
    ]);
}
