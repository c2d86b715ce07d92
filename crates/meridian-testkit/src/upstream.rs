//! A tiny HTTP/1.1 upstream that answers every request with its name, so
//! tests can see where Envoy sent a request. It can be told to fail with 503
//! (`set_failing`), to hang (`set_hanging`: connections are accepted and
//! requests read, but never answered), or to stop (connections refused).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Upstream {
    pub port: u16,
    pub name: String,
    failing: Arc<AtomicBool>,
    hanging: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, 0).await
    }

    /// `n` upstreams all answering `name` (a region's hosts).
    pub async fn start_many(name: &str, n: usize) -> Vec<Upstream> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Upstream::start(name).await);
        }
        v
    }

    /// Starts on `port` (0: any free port).
    pub async fn start_on(name: &str, port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let hanging = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let stop_flag = stopped.clone();
        let (n, f, h) = (name.to_string(), failing.clone(), hanging.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (n, f, h, stop) = (n.clone(), f.clone(), h.clone(), stop_flag.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    // Serve keep-alive connections: one response per request head.
                    loop {
                        let Ok(k) = sock.read(&mut buf).await else {
                            return;
                        };
                        // A stopped upstream drops its open connections too.
                        if k == 0 || stop.load(Ordering::Relaxed) {
                            return;
                        }
                        seen.extend_from_slice(&buf[..k]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if h.load(Ordering::Relaxed) {
                                // Hung: keep reading (and discarding) until
                                // the peer gives up and closes, never answer.
                                while matches!(sock.read(&mut buf).await, Ok(k) if k > 0) {
                                    if stop.load(Ordering::Relaxed) {
                                        return;
                                    }
                                }
                                return;
                            }
                            let (status, body) = if f.load(Ordering::Relaxed) {
                                ("503 Service Unavailable", "failing")
                            } else {
                                ("200 OK", n.as_str())
                            };
                            let resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}", body.len());
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            port,
            name: name.to_string(),
            failing,
            hanging,
            stopped,
            task,
        }
    }

    /// Closes the listener and every open connection, like a dead process.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Hanging: new requests (on new or open connections) are read and
    /// never answered; the connection stays open until the peer closes it.
    /// Requests already hung stay hung after `set_hanging(false)`.
    pub fn set_hanging(&self, hanging: bool) {
        self.hanging.store(hanging, Ordering::Relaxed);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One request on a fresh connection: the first read of the answer,
    /// `None` if none within 300 ms, an error if the connection fails.
    async fn ask(port: u16) -> std::io::Result<Option<String>> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut buf = vec![0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(k) => Ok(Some(String::from_utf8_lossy(&buf[..k?]).into_owned())),
            Err(_) => Ok(None),
        }
    }

    #[tokio::test]
    async fn answers_fails_hangs_and_recovers() {
        let u = Upstream::start("here").await;
        let ok = ask(u.port).await.unwrap().unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("here"),
            "{ok}"
        );
        u.set_failing(true);
        let failing = ask(u.port).await.unwrap().unwrap();
        assert!(failing.starts_with("HTTP/1.1 503"), "{failing}");
        u.set_failing(false);
        u.set_hanging(true);
        assert_eq!(
            ask(u.port).await.unwrap(),
            None,
            "a hanging upstream answered"
        );
        u.set_hanging(false);
        let ok = ask(u.port).await.unwrap().unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        u.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ask(u.port).await.is_err(), "a stopped upstream accepted");
    }
}
