//! The HTTP side of the metrics endpoint: `/metrics`, `/healthz` and `/readyz`.
//!
//! request per connection, request line parsed, headers read and ignored, a response with
//! `Connection: close`. A scrape endpoint needs nothing more, and this keeps hyper, http,
//! http-body and hyper-util (and their parsing surface) out of a privileged daemon. Slow or
//! malformed clients are bounded by a per-connection deadline, a request size limit and a
//! cap on concurrent connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::exposition::{render_as, Format};
use super::{MetricsError, MetricsSource};
use crate::loader::LoaderError;

/// A whole connection (read request, build response, write it) must finish within this.
pub(super) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// The request head must arrive within this: a client that connects and dawdles (or a
/// slowloris) holds a slot for two seconds, not ten.
pub(super) const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Request line plus headers larger than this get `431`.
pub(super) const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Connections handled at once; further ones wait in the accept queue. Enough that a local
/// process holding dozens of idle connections leaves the scraper a free one.
pub(super) const MAX_CONNECTIONS: usize = 256;

fn bind_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            "another process, perhaps another `nodegate run`, holds that port; choose another with --metrics ADDR"
        }
        Some(libc::EADDRNOTAVAIL) => "no interface of this host has that address",
        Some(libc::EACCES) => "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port",
        _ => "",
    }
}

/// Listen on `addr` and serve `GET /metrics` from `source` until the task is aborted. Binds
/// before returning, so a taken port is an error here, not in the background. Call
/// [`check_bind_addr`] first. Must be called inside a tokio runtime.
pub fn serve(
    addr: SocketAddr,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> Result<JoinHandle<()>, MetricsError> {
    serve_listener(bind(addr)?, source)
}

/// Bind `addr` for [`serve_listener`]: `run` binds before it changes anything, so a taken
/// port fails the start while the kernel is as it was.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    std::net::TcpListener::bind(addr).map_err(|source| bind_error(addr, source))
}

/// The error of a listening socket on `addr` that could not be set up, with its hint.
pub fn bind_error(addr: SocketAddr, source: io::Error) -> MetricsError {
    MetricsError::Bind {
        addr,
        hint: bind_hint(&source),
        source,
    }
}

/// [`serve`] on a socket that is already bound (an ephemeral port in tests, or one handed
/// over by a service manager).
pub fn serve_listener(
    listener: std::net::TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> Result<JoinHandle<()>, MetricsError> {
    serve_with_deadline(listener, source, CONNECTION_DEADLINE)
}

pub(super) fn serve_with_deadline(
    listener: std::net::TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
    deadline: Duration,
) -> Result<JoinHandle<()>, MetricsError> {
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let bind_error = |source: io::Error| bind_error(addr, source);
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = TcpListener::from_std(listener).map_err(bind_error)?;
    tracing::debug!(%addr, "metrics endpoint listening");
    Ok(tokio::spawn(accept_loop(listener, source, deadline)))
}

async fn accept_loop(
    listener: TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
    deadline: Duration,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(deadline, handle(stream, source)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "metrics request failed"),
                Err(_elapsed) => tracing::debug!(%peer, "metrics request timed out"),
            }
            drop(permit);
        });
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    extra_headers: &'static str,
    /// HEAD: send the headers (with the length GET would have) but not the body.
    head_only: bool,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra_headers: "",
            head_only: false,
        }
    }
}

/// Read the request head: everything up to the blank line, at most [`MAX_REQUEST_BYTES`].
/// `None` when it is too large.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // Peer closed early: answer what we have (a request line without headers is
            // still a request for HTTP/1.0-style clients).
            return Ok(Some(head));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(
    mut stream: TcpStream,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> io::Result<()> {
    let head = tokio::time::timeout(HEAD_DEADLINE, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head in time"))??;
    let response = match head {
        None => Response::text("431 Request Header Fields Too Large", "request too large\n"),
        Some(head) => respond(&head, source).await,
    };
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.extra_headers,
    );
    stream.write_all(header.as_bytes()).await?;
    if !response.head_only {
        stream.write_all(response.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn respond(head: &[u8], source: Arc<dyn MetricsSource + Send + Sync>) -> Response {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text("400 Bad Request", "bad request\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return Response::text(
            "404 Not Found",
            "not found; metrics are at /metrics, health at /healthz and /readyz\n",
        );
    }
    let head_request = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = Response::text("405 Method Not Allowed", "method not allowed\n");
            response.extra_headers = "Allow: GET, HEAD\r\n";
            return response;
        }
    };
    let mut probe = match path {
        // Alive and serving: the process answers.
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => {
            match tokio::task::spawn_blocking(move || source.daemon_state().not_ready).await {
                Ok(None) => Response::text("200 OK", "ready\n"),
                Ok(Some(why)) => {
                    Response::text("503 Service Unavailable", format!("not ready: {why}\n"))
                }
                Err(_) => Response::text("500 Internal Server Error", "state unavailable\n"),
            }
        }
        _ => return scrape(source, head_request, Format::negotiate(accept_header(head))).await,
    };
    probe.head_only = head_request;
    probe
}

/// The value of the request's `Accept` header, if it has one.
fn accept_header(head: &[u8]) -> Option<&str> {
    std::str::from_utf8(head)
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("accept")
                .then(|| value.trim())
        })
}

/// `GET /metrics`, in the format the request's `Accept` header asks for.
async fn scrape(
    source: Arc<dyn MetricsSource + Send + Sync>,
    head_request: bool,
    format: Format,
) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let snapshot = source.snapshot()?;
        Ok::<_, LoaderError>(render_as(&snapshot, &source.daemon_state(), format))
    })
    .await;
    match rendered {
        Ok(Ok(body)) => Response {
            status: "200 OK",
            content_type: format.content_type(),
            body,
            extra_headers: "",
            head_only: head_request,
        },
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics scrape: cannot read the counters");
            Response::text(
                "500 Internal Server Error",
                format!("cannot read the counters: {err}\n"),
            )
        }
        Err(join) => {
            tracing::warn!(error = %join, "metrics scrape: renderer failed");
            Response::text("500 Internal Server Error", "internal error\n")
        }
    }
}
