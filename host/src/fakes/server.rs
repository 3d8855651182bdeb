//! The fakes' HTTP server: an axum router served over hyper HTTP/1.1 on
//! `127.0.0.1:0`. Unlike `axum::serve`, stopping it (drop) also ends every
//! open connection and every request still running on one (a hanging long
//! poll or an injected hang), so a dropped fake leaves nothing behind.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tracing::debug;

/// A running server; dropping it stops the accept loop and aborts every
/// connection task.
pub(crate) struct Server {
    task: JoinHandle<()>,
}

impl Server {
    /// Bind `127.0.0.1:0` (to learn the address before building the app).
    pub(crate) async fn bind() -> std::io::Result<TcpListener> {
        TcpListener::bind("127.0.0.1:0").await
    }

    /// Serve `app` on `listener`.
    pub(crate) fn serve(listener: TcpListener, app: Router, name: &'static str) -> Server {
        let task = tokio::spawn(async move {
            // Owned by the loop: aborting the loop drops the set, which
            // aborts every connection task.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let app = app.clone();
                            conns.spawn(async move {
                                let service = hyper::service::service_fn(
                                    move |req: hyper::Request<Incoming>| {
                                        app.clone().oneshot(req.map(axum::body::Body::new))
                                    },
                                );
                                if let Err(e) = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                                {
                                    debug!(fake = name, error = %e, "fake connection ended with an error");
                                }
                            });
                        }
                        Err(e) => {
                            debug!(fake = name, error = %e, "fake accept failed");
                            tokio::task::yield_now().await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Server { task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
