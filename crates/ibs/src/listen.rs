//! The API's accept loop, plain HTTP or TLS. Every connection is served on its own task, so a slow
//! or idle client holds only its own connection, never the listener: a TLS handshake must finish
//! within [`HANDSHAKE_TIMEOUT`], and a request head must arrive within [`HEADER_READ_TIMEOUT`]
//! (hyper's header-read timer, which also closes a kept-alive connection that stays silent). The
//! client's address reaches the API as `ConnectInfo<SocketAddr>` (per-client rate limiting). On
//! shutdown the loop stops accepting, asks every connection to finish its request, and waits for
//! them up to [`SHUTDOWN_GRACE`].

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let (close_tx, close_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let tls = tls.clone();
        let close = close_rx.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(tcp, addr, app, close).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, addr, app, close).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(close_rx);
    let _ = close_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, close_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

async fn connection<I>(io: I, addr: SocketAddr, app: Router, mut close: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        req.map(axum::body::Body::new)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection from {addr}: {e}");
            }
        }
        _ = close.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
