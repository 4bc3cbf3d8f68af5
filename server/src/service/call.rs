//! The one path every `mcs.v1.Labels` call walks: authorize the caller for
//! the method's role, run the method, audit the outcome, count it, reply.
//!
//! A handler in [`super`] hands its request and its body (domain call plus
//! conversion) to [`LabelService::serve`], or, for a server stream, to
//! [`LabelService::serve_stream`]; nothing else gets a [`Call`], so a method
//! cannot run before its caller is authorized, and a state-changing one
//! cannot end without an audit line. Which role a method needs is the
//! [`Method`] table below, held equal to the proto by the tests.
//!
//! What is logged under `mcsd::audit`: every refusal, and the outcome of
//! every state-changing (admin) call; reads are not logged when they pass.

use std::future::Future;
use std::pin::Pin;

use mcs_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::LabelService;
use crate::auth::{Caller, Role};
use crate::connection::PeerInfo;
use crate::metrics::Metrics;

/// A method of `mcs.v1.Labels`, as the one path treats it.
#[derive(Debug)]
pub(crate) struct Method {
    /// Its name in the proto.
    pub(crate) name: &'static str,
    /// The role a caller needs; admin methods are audited with their
    /// outcome.
    pub(crate) role: Role,
    /// Which counter its outcome adds to, besides the request latency the
    /// metrics layer measures for every call.
    counter: Counter,
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    None,
    Allocations,
    Releases,
}

const fn admin(name: &'static str, counter: Counter) -> Method {
    Method {
        name,
        role: Role::Admin,
        counter,
    }
}

const fn reader(name: &'static str) -> Method {
    Method {
        name,
        role: Role::Reader,
        counter: Counter::None,
    }
}

pub(crate) const ALLOCATE: Method = admin("Allocate", Counter::Allocations);
pub(crate) const RELEASE: Method = admin("Release", Counter::Releases);
pub(crate) const RESERVE: Method = admin("Reserve", Counter::None);
pub(crate) const UNRESERVE: Method = admin("Unreserve", Counter::None);
pub(crate) const RECONCILE: Method = admin("Reconcile", Counter::None);
pub(crate) const RELABEL: Method = admin("Relabel", Counter::None);
pub(crate) const GET: Method = reader("Get");
pub(crate) const LIST: Method = reader("List");
pub(crate) const LIST_RESERVATIONS: Method = reader("ListReservations");
pub(crate) const STATS: Method = reader("Stats");
pub(crate) const STATUS: Method = reader("Status");

/// Every method; the tests hold it equal to the service's descriptor.
#[cfg(test)]
pub(crate) const METHODS: &[&Method] = &[
    &ALLOCATE,
    &RELEASE,
    &RESERVE,
    &UNRESERVE,
    &RECONCILE,
    &RELABEL,
    &GET,
    &LIST,
    &LIST_RESERVATIONS,
    &STATS,
    &STATUS,
];

/// What the audit line of a request names as its subject.
pub(crate) trait Subject {
    /// The subject; empty where the request names none (yet).
    fn subject(&self) -> String;
}

macro_rules! subject {
    ($($request:ty => |$r:ident| $subject:expr;)*) => {
        $(impl Subject for $request {
            fn subject(&self) -> String {
                let $r = self;
                $subject
            }
        })*
    };
}

subject! {
    pb::AllocateRequest => |r| r.container_id.clone();
    pb::ReleaseRequest => |r| r.container_id.clone();
    pb::ReserveRequest => |r| r.target.clone();
    pb::UnreserveRequest => |r| r.target.clone();
    pb::RelabelRequest => |r| format!("{} {}", r.container_id, r.path);
    // The owner comes in the first message: see `Call::about`.
    tonic::Streaming<pb::ReconcileRequest> => |_r| String::new();
    pb::GetRequest => |_r| String::new();
    pb::ListRequest => |_r| String::new();
    pb::ListReservationsRequest => |_r| String::new();
    pb::StatsRequest => |_r| String::new();
    pb::StatusRequest => |_r| String::new();
}

/// What the counters learn from a reply: the owner of the allocation it
/// names, if any.
pub(crate) trait Reply {
    /// That owner.
    fn owner(&self) -> Option<&str> {
        None
    }
}

impl Reply for pb::AllocateResponse {
    fn owner(&self) -> Option<&str> {
        self.allocation.as_ref().map(|a| a.owner.as_str())
    }
}

impl Reply for pb::ReleaseResponse {
    fn owner(&self) -> Option<&str> {
        self.allocation.as_ref().map(|a| a.owner.as_str())
    }
}

impl Reply for pb::Allocation {}
impl Reply for pb::ReserveResponse {}
impl Reply for pb::UnreserveResponse {}
impl Reply for pb::ListReservationsResponse {}
impl Reply for pb::StatsResponse {}
impl Reply for pb::ReconcileResponse {}
impl Reply for pb::StatusResponse {}
/// A stream's outcome.
impl Reply for () {}

/// The sending end of a server stream.
pub(crate) type Feed<T> = mpsc::Sender<Result<T, Status>>;

/// A server stream as tonic sends it.
pub(crate) type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An authorized call: who made it, to which method, about what. Only
/// [`LabelService::begin`] makes one.
pub(crate) struct Call {
    caller: Caller,
    method: &'static Method,
    subject: String,
}

impl Call {
    /// Who made the call.
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Names what the call is about, for a request that says so only
    /// once it is read (a client stream's first message).
    pub(crate) fn about(&mut self, subject: String) {
        self.subject = subject;
    }

    /// Audits a state-changing call's outcome and counts it.
    fn finish<T: Reply>(self, result: &Result<T, Status>, metrics: &Metrics) {
        if self.method.role == Role::Admin {
            audit(&self.caller, self.method.name, &self.subject, result);
        }
        let owner = || {
            result
                .as_ref()
                .ok()
                .and_then(Reply::owner)
                .unwrap_or("unknown")
        };
        match self.method.counter {
            Counter::None => {}
            Counter::Allocations => metrics.allocation(owner(), result_label(result)),
            Counter::Releases => metrics.release(owner(), result_label(result)),
        }
    }
}

impl LabelService {
    /// Runs a call whose outcome is its reply (unary, and client streams):
    /// `handle` runs only once the caller is authorized, and its outcome
    /// is audited and counted before it is sent.
    pub(crate) async fn serve<Req: Subject, Resp: Reply>(
        &self,
        method: &'static Method,
        request: Request<Req>,
        handle: impl AsyncFnOnce(&mut Call, Req) -> Result<Resp, Status>,
    ) -> Result<Response<Resp>, Status> {
        let (mut call, request) = self.begin(method, request)?;
        let result = handle(&mut call, request).await;
        call.finish(&result, &self.metrics);
        result.map(Response::new)
    }

    /// Runs a server stream: `open` reads the request and returns the
    /// producer of the stream's messages (or refuses the call, which is
    /// then finished at once). The producer runs on its own task, with a
    /// feed of `buffer` messages; its outcome is audited and counted when
    /// it ends, whether or not the client still reads, and a failure is
    /// the stream's last item.
    pub(crate) async fn serve_stream<Req: Subject, Item, Producer>(
        &self,
        method: &'static Method,
        request: Request<Req>,
        buffer: usize,
        open: impl AsyncFnOnce(&mut Call, Req, Feed<Item>) -> Result<Producer, Status>,
    ) -> Result<Response<Streamed<Item>>, Status>
    where
        Item: Send + 'static,
        Producer: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let (mut call, request) = self.begin(method, request)?;
        let (tx, rx) = mpsc::channel(buffer);
        let produce = match open(&mut call, request, tx.clone()).await {
            Ok(produce) => produce,
            Err(status) => {
                call.finish(&Err::<(), _>(status.clone()), &self.metrics);
                return Err(status);
            }
        };
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let result = produce.await;
            call.finish(&result, &metrics);
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// The authorized call and its message, or the refusal (logged for the
    /// audit trail).
    fn begin<Req: Subject>(
        &self,
        method: &'static Method,
        request: Request<Req>,
    ) -> Result<(Call, Req), Status> {
        let caller = self.authorize(&request, method)?;
        let request = request.into_inner();
        let subject = request.subject();
        Ok((
            Call {
                caller,
                method,
                subject,
            },
            request,
        ))
    }

    /// The caller, if it holds the method's role.
    fn authorize<T>(&self, request: &Request<T>, method: &Method) -> Result<Caller, Status> {
        let Method { name, role, .. } = *method;
        let Some(caller) = caller(request) else {
            tracing::warn!(target: "mcsd::audit", method = name, "refused: no peer credentials");
            return Err(Status::permission_denied(format!(
                "{name} refused: mcsd could not read the caller's credentials (it only serves local Unix socket clients)"
            )));
        };
        let decision = self
            .policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(&caller, name, role);
        decision.map(|()| caller.clone()).map_err(|denied| {
            tracing::warn!(
                target: "mcsd::audit",
                method = name,
                uid = caller.uid,
                pid = caller.pid,
                needed = %role,
                context = %caller.label,
                reason = %denied,
                "refused"
            );
            denied.into()
        })
    }
}

/// The caller, as the kernel described it when the connection was accepted.
fn caller<T>(request: &Request<T>) -> Option<Caller> {
    let info = request.extensions().get::<PeerInfo>()?;
    info.caller.as_deref().cloned()
}

/// A result as a metrics label: `ok` or the status code's name.
fn result_label<T>(result: &Result<T, Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(status) => match status.code() {
            Code::InvalidArgument => "invalid_argument",
            Code::AlreadyExists => "already_exists",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::PermissionDenied => "permission_denied",
            Code::Unavailable => "unavailable",
            Code::NotFound => "not_found",
            _ => "error",
        },
    }
}

/// Records a state-changing call and its outcome in the structured log.
fn audit<T>(caller: &Caller, method: &'static str, subject: &str, result: &Result<T, Status>) {
    match result {
        Ok(_) => tracing::info!(
            target: "mcsd::audit",
            method,
            uid = caller.uid,
            pid = caller.pid,
            subject,
            result = "ok"
        ),
        Err(status) => tracing::info!(
            target: "mcsd::audit",
            method,
            uid = caller.uid,
            pid = caller.pid,
            subject,
            result = ?status.code(),
            message = status.message()
        ),
    }
}
