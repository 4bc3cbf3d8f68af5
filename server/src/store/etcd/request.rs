//! Sending requests to etcd: each under the store's time limit, sent again
//! only when that cannot apply it twice, with etcd's errors turned into
//! [`StoreError`]s.
//!
//! Whether a failed request may be sent again depends on what the failure
//! says about etcd ([`Failure`]): one that never reached etcd is always
//! safe to resend, one whose outcome is unknown only if it is a read.

use std::future::Future;
use std::time::Duration;

use etcd_client::{GetOptions, Txn as EtcdTxn};

use super::EtcdStore;
use crate::store::StoreError;

/// Times a request is sent when it could not reach etcd.
const SEND_ATTEMPTS: u32 = 4;
/// Wait before sending again, times the attempt number.
const RESEND_AFTER: Duration = Duration::from_millis(50);

/// What a failed request tells about etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The request never reached etcd (no connection could be made to the
    /// member): sending it again cannot apply it twice.
    NotSent,
    /// etcd may or may not have acted on it (the connection broke, the
    /// member lost its leader, the answer never came): only a read is safe
    /// to send again.
    Unknown,
    /// etcd refused it (a bad request, a missing permission): sending it
    /// again would not help.
    Refused,
}

/// Classifies a failed request by the kind of error, never by its text:
/// a connection that could not be made (a transport error, or a status
/// tonic made from a [`tonic::ConnectError`]) means not sent; a status
/// that etcd or the transport use for transient trouble (unavailable, past
/// its deadline, cancelled, unknown) means the outcome is unknown; any
/// other status is a refusal.
fn classify(error: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match error {
        E::TransportError(_) => Failure::NotSent,
        E::GRpcStatus(status) => {
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                if cause.is::<tonic::ConnectError>() {
                    return Failure::NotSent;
                }
                source = cause.source();
            }
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => Failure::Unknown,
                _ => Failure::Refused,
            }
        }
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::Utf8Error(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointsNotManaged => Failure::Refused,
        _ => Failure::Unknown,
    }
}

impl EtcdStore {
    /// Runs one etcd request under the time limit, mapping its errors. A
    /// request that never reached etcd (the connection could not be made:
    /// a member is down and the client has not noticed yet) is sent again;
    /// so is any failed read when `read_only`.
    pub(super) async fn call<T, F, Fut>(
        &self,
        read_only: bool,
        mut request: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let unreachable = |detail: String| StoreError::Unreachable {
            store: self.description.clone(),
            detail,
        };
        let mut attempt = 1;
        loop {
            let error = match tokio::time::timeout(self.timeout, request()).await {
                Err(_) => return Err(unreachable(format!("no answer within {:?}", self.timeout))),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
            };
            let failure = classify(&error);
            if failure == Failure::Refused {
                let detail = match error {
                    etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
                    other => other.to_string(),
                };
                return Err(StoreError::Io {
                    path: self.description.clone().into(),
                    detail,
                });
            }
            let resend = failure == Failure::NotSent || read_only;
            if attempt >= SEND_ATTEMPTS || !resend {
                return Err(unreachable(error.to_string()));
            }
            tokio::time::sleep(RESEND_AFTER * attempt).await;
            attempt += 1;
        }
    }

    /// One read.
    pub(super) async fn get(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        self.call(true, || {
            let mut kv = self.kv.clone();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// One transaction; `read_only` if it only reads.
    pub(super) async fn txn(
        &self,
        txn: EtcdTxn,
        read_only: bool,
    ) -> Result<etcd_client::TxnResponse, StoreError> {
        self.call(read_only, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic makes it from a failure below gRPC.
    fn status_from(error: impl std::error::Error + Send + Sync + 'static) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(error)))
    }

    #[test]
    fn failures_are_classified_by_kind_not_by_text() {
        use std::io::{Error as IoError, ErrorKind};
        // No connection could be made: never sent, whatever the words.
        let refused = IoError::new(
            ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let not_connected = status_from(tonic::ConnectError(Box::new(refused)));
        assert_eq!(
            classify(&not_connected),
            Failure::NotSent,
            "{not_connected}"
        );
        let bad_endpoint = tonic::transport::Endpoint::from_shared("http://[::1".to_owned())
            .expect_err("an endpoint that cannot be connected to");
        assert_eq!(
            classify(&etcd_client::Error::TransportError(bad_endpoint)),
            Failure::NotSent
        );
        // Sent, and the outcome is unknown, even if the words say connect.
        for status in [
            tonic::Status::unavailable("etcdserver: leader changed"),
            tonic::Status::unavailable("reconnect error after the request was sent"),
            tonic::Status::deadline_exceeded("etcdserver: request timed out"),
            tonic::Status::cancelled("connect error"),
        ] {
            let error = etcd_client::Error::GRpcStatus(status);
            assert_eq!(classify(&error), Failure::Unknown, "{error}");
        }
        let reset = IoError::new(ErrorKind::ConnectionReset, "connection reset");
        assert_eq!(
            classify(&etcd_client::Error::IoError(reset)),
            Failure::Unknown
        );
        // Refusals.
        for status in [
            tonic::Status::invalid_argument("etcdserver: too many operations in txn request"),
            tonic::Status::permission_denied("etcdserver: permission denied"),
            tonic::Status::failed_precondition("connect error"),
        ] {
            let error = etcd_client::Error::GRpcStatus(status);
            assert_eq!(classify(&error), Failure::Refused, "{error}");
        }
        assert_eq!(
            classify(&etcd_client::Error::InvalidArgs("no key".into())),
            Failure::Refused
        );
    }
}
