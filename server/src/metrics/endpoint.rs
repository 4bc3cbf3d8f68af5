//! The `/metrics` endpoint: Prometheus' text format over HTTP/1.1, served
//! by hyper on loopback TCP or on a Unix socket bound with the main
//! socket's safety (see [`crate::socket`]).
//!
//! One response per connection, then the connection is closed: that is
//! all a scraper needs, and a client that opens a connection and sends
//! nothing is dropped after [`HEAD_TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Listen, Metrics, Pairs};
use crate::socket::BoundSocket;

/// How long a connection may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What Prometheus' text exposition format is served as.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads the pair counts at each scrape, from whatever holds the pairs (the
/// daemon implements it over the engine, which this module does not know).
pub trait Gauges: Clone + Send + Sync + 'static {
    /// The counts now; `None` leaves the gauges as they were.
    fn pairs(&self) -> impl Future<Output = Option<Pairs>> + Send;
}

/// Serves `GET /metrics` on `listen` until the task is aborted.
pub async fn serve(
    listen: Listen,
    metrics: Arc<Metrics>,
    gauges: impl Gauges,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving metrics");
            Ok(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(connection(stream, metrics.clone(), gauges.clone()));
                }
            }))
        }
        Listen::Unix(path) => {
            // Bound like the main socket: only a stale socket is replaced,
            // never a file or a live listener, and the mode is 0660 from
            // the start whatever the umask.
            let mut socket = BoundSocket::bind(&path).map_err(std::io::Error::other)?;
            let listener = socket.listener()?;
            tracing::info!(path = %path.display(), "serving metrics");
            Ok(tokio::spawn(async move {
                // Owned by the task: the file goes when the task is aborted.
                let _socket = socket;
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(connection(stream, metrics.clone(), gauges.clone()));
                }
            }))
        }
    }
}

/// Answers one connection's request, then closes it.
async fn connection<S, G>(stream: S, metrics: Arc<Metrics>, gauges: G)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Gauges,
{
    let service = service_fn(move |request| {
        let (metrics, gauges) = (metrics.clone(), gauges.clone());
        async move { Ok::<_, Infallible>(answer(request, &metrics, &gauges).await) }
    });
    // A scraper that hangs up early, or a client that is not HTTP, is
    // nothing to log: the next scrape comes anyway.
    let _ = http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    request: Request<Incoming>,
    metrics: &Metrics,
    gauges: &impl Gauges,
) -> Response<Full<Bytes>> {
    let (status, body) = if request.method() == Method::GET && request.uri().path() == "/metrics" {
        (StatusCode::OK, metrics.render(gauges.pairs().await))
    } else {
        (
            StatusCode::NOT_FOUND,
            "metrics are at /metrics\n".to_owned(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(TEXT_FORMAT),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone)]
    struct Fixed(Option<Pairs>);

    impl Gauges for Fixed {
        async fn pairs(&self) -> Option<Pairs> {
            self.0
        }
    }

    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let pairs = Pairs {
            total: 10,
            held: 3,
            free: 6,
            reserved: 1,
        };
        let served = tokio::spawn(connection(
            server,
            Arc::new(Metrics::new()),
            Fixed(Some(pairs)),
        ));
        client.write_all(request).await.unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        served.await.unwrap();
        response
    }

    #[tokio::test]
    async fn a_scrape_gets_the_text_format_with_the_gauges_read_now_and_the_connection_closes() {
        let response = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains(&format!("content-type: {TEXT_FORMAT}\r\n")),
            "{response}"
        );
        assert!(response.contains("connection: close\r\n"), "{response}");
        assert!(
            response.contains("mcsd_pairs{state=\"held\"} 3\n"),
            "{response}"
        );
        assert!(
            response.contains("mcsd_pairs{state=\"reserved\"} 1\n"),
            "{response}"
        );
    }

    #[tokio::test]
    async fn anything_but_get_metrics_is_a_404() {
        for request in [
            &b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let response = exchange(request).await;
            assert!(
                response.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{response}"
            );
            assert!(
                response.ends_with("metrics are at /metrics\n"),
                "{response}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_dropped_after_the_head_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(connection(server, Arc::new(Metrics::new()), Fixed(None)));
        client.write_all(b"GET /metr").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        // The server ends the connection (with a 408 or none): EOF either way.
        client.read_to_end(&mut rest).await.unwrap();
        served.await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= HEAD_TIMEOUT, "dropped after {waited:?}");
        assert!(waited < HEAD_TIMEOUT * 2, "dropped after {waited:?}");
    }
}
