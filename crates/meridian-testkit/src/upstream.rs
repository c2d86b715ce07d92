//! A tiny HTTP/1.1 upstream that answers every request with its name, so
//! tests can see where Envoy sent a request. It can be told to fail with 503.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Upstream {
    pub port: u16,
    pub name: String,
    failing: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, 0).await
    }

    /// Starts on `port` (0: any free port).
    pub async fn start_on(name: &str, port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind upstream");
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let stop_flag = stopped.clone();
        let (n, f) = (name.to_string(), failing.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (n, f, stop) = (n.clone(), f.clone(), stop_flag.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    // Serve keep-alive connections: one response per request head.
                    loop {
                        let Ok(k) = sock.read(&mut buf).await else { return };
                        // A stopped upstream drops its open connections too.
                        if k == 0 || stop.load(Ordering::Relaxed) {
                            return;
                        }
                        seen.extend_from_slice(&buf[..k]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let (status, body) = if f.load(Ordering::Relaxed) { ("503 Service Unavailable", "failing") } else { ("200 OK", n.as_str()) };
                            let resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}", body.len());
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Upstream { port, name: name.to_string(), failing, stopped, task }
    }

    /// Closes the listener and every open connection, like a dead process.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
