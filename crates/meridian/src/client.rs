//! Connecting to controllers: the addresses come from `--server`,
//! `MERIDIAN_SERVER` or the CLI config file, and the CLI moves on to the next
//! address when one does not answer. With a client certificate (`--ca`,
//! `--cert`, `--key` or the context's) every connection is mutual TLS and
//! the server must prove it is a controller (`node/ID`).

use std::time::Duration;

use anyhow::{anyhow, Result};
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::exit::{coded, TLS_HANDSHAKE, UNAVAILABLE};

pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

#[derive(Clone)]
pub struct Servers {
    pub addrs: Vec<String>,
    pub timeout: Duration,
    tls: Option<std::sync::Arc<meridian_tls::TlsSource>>,
    /// Some address was given as `https://`: TLS is required.
    https: bool,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servers")
            .field("addrs", &self.addrs)
            .field("tls", &self.tls.as_ref().map(|t| t.identity().to_string()))
            .finish()
    }
}

impl Servers {
    pub fn new(list: &[String], timeout: Duration) -> Servers {
        let https = list.iter().any(|s| s.contains("https://"));
        let addrs: Vec<String> = list
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| {
                s.trim()
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .collect();
        let addrs = if addrs.is_empty() {
            vec![DEFAULT_SERVER.to_string()]
        } else {
            addrs
        };
        Servers {
            addrs,
            timeout,
            tls: None,
            https,
        }
    }

    /// Connects over mutual TLS with this client certificate. `None` is
    /// plaintext, refused when an address was given as `https://`.
    pub fn with_tls(
        mut self,
        tls: Option<std::sync::Arc<meridian_tls::TlsSource>>,
    ) -> Result<Servers> {
        if tls.is_none() && self.https {
            anyhow::bail!("an https:// server needs a client certificate: give --ca, --cert and --key (or MERIDIAN_CA/CERT/KEY, or a context with them)");
        }
        self.tls = tls;
        Ok(self)
    }

    async fn connect(&self, addr: &str) -> Result<Result<Channel, Tried>> {
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| anyhow!("--server {addr:?}: not an address: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let tls = self
            .tls
            .as_ref()
            .map(|t| (t, meridian_tls::Expect::AnyNode));
        Ok(meridian_tls::connect(ep, tls).await.map_err(|e| Tried {
            text: format!("{addr} ({})", root_cause(&e)),
            tls: meridian_tls::handshake_failure(&e).is_some(),
        }))
    }

    /// Why `addr` refused this client's TLS, when `st` is a transport
    /// failure (a status made from a transport error, which carries a
    /// source) that a probe shows to be one.
    async fn refused_tls(&self, addr: &str, st: &tonic::Status) -> Option<String> {
        let tls = self.tls.as_ref()?;
        // A status the server sent has no source: only transport ones do.
        std::error::Error::source(st)?;
        meridian_tls::Connector::new(tls.clone(), meridian_tls::Expect::AnyNode)
            .probe(addr)
            .await
    }

    /// Connects to the first address that accepts a connection.
    pub async fn channel(&self) -> Result<Channel> {
        let mut tried = Vec::new();
        for addr in &self.addrs {
            match self.connect(addr).await? {
                Ok(ch) => return Ok(ch),
                Err(e) => tried.push(e),
            }
        }
        Err(unreachable_error(&tried))
    }

    /// Runs `call` against the first controller that answers; moves on to the
    /// next when one is unreachable or answers UNAVAILABLE (removed, cut
    /// off, shutting down). Every write carries a request id, so a retry on
    /// another controller applies once.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut tried = Vec::new();
        let mut last: Option<tonic::Status> = None;
        for addr in &self.addrs {
            let ch = match self.connect(addr).await? {
                Ok(ch) => ch,
                Err(e) => {
                    tried.push(e);
                    continue;
                }
            };
            match call(ch).await {
                Ok(v) => return Ok(v),
                // The server refused our certificate (TLS 1.3 says so on
                // the first read): try the next one, as for a refused connect.
                Err(st) if meridian_tls::handshake_failure(&st).is_some() => {
                    let why = meridian_tls::handshake_failure(&st).unwrap_or_default();
                    tried.push(Tried {
                        text: format!("{addr} ({why})"),
                        tls: true,
                    });
                }
                Err(st) => {
                    // A transport failure on a TLS connection may be the
                    // server refusing our certificate, with its alert lost
                    // to the request's broken pipe: ask the server again.
                    if let Some(why) = self.refused_tls(addr, &st).await {
                        tried.push(Tried {
                            text: format!("{addr} ({why})"),
                            tls: true,
                        });
                        continue;
                    }
                    if st.code() != tonic::Code::Unavailable {
                        return Err(status(st));
                    }
                    tried.push(Tried {
                        text: format!("{addr} ({})", st.message()),
                        tls: false,
                    });
                    last = Some(st);
                }
            }
        }
        match last {
            // Every controller answered, none could serve: report the last
            // answer, which names the cause (no quorum, no leader).
            Some(st) if tried.len() == 1 => Err(status(st)),
            Some(st) => Err(status(tonic::Status::unavailable(format!(
                "{} (tried {})",
                st.message(),
                Tried::list(&tried)
            )))),
            None => Err(unreachable_error(&tried)),
        }
    }
}

/// One controller that could not be used, and whether because of TLS.
struct Tried {
    text: String,
    tls: bool,
}

impl Tried {
    fn list(tried: &[Tried]) -> String {
        tried
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every controller failed. When each failed in the TLS handshake, the
/// fix is the certificates, not the servers: say so, with its own code.
fn unreachable_error(tried: &[Tried]) -> anyhow::Error {
    if !tried.is_empty() && tried.iter().all(|t| t.tls) {
        return coded(
            TLS_HANDSHAKE,
            format!(
                "TLS handshake failed with every controller; tried {}. Check --ca (the CA that issued the controllers' certificates), --cert and --key (a certificate of that CA with an operator identity)",
                Tried::list(tried)
            ),
        );
    }
    coded(
        UNAVAILABLE,
        format!(
            "cannot reach any controller; tried {}. Is `meridian server` running? Set --server or MERIDIAN_SERVER",
            Tried::list(tried)
        ),
    )
}

/// Large enough for a whole config's list or history in one response.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

fn config_client(ch: Channel) -> ConfigServiceClient<Channel> {
    ConfigServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

fn cluster_client(ch: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

impl Servers {
    /// [`Servers::call`] with the API client `client` makes of a channel.
    async fn call_with<C, T, F, Fut>(&self, client: fn(Channel) -> C, mut f: F) -> Result<T>
    where
        F: FnMut(C) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|ch| {
            let fut = f(client(ch));
            async move { fut.await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// [`Servers::call`] with a config API client.
    pub async fn config_call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(ConfigServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with(config_client, f).await
    }

    /// [`Servers::call`] with a cluster API client.
    pub async fn cluster_call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(ClusterServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with(cluster_client, f).await
    }

    /// [`Servers::config_call`] sending `req`, a copy on each try.
    pub async fn config_request<R: Clone, T, F, Fut>(&self, req: &R, mut f: F) -> Result<T>
    where
        F: FnMut(ConfigServiceClient<Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.config_call(|c| f(c, req.clone())).await
    }

    /// [`Servers::cluster_call`] sending `req`, a copy on each try.
    pub async fn cluster_request<R: Clone, T, F, Fut>(&self, req: &R, mut f: F) -> Result<T>
    where
        F: FnMut(ClusterServiceClient<Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.cluster_call(|c| f(c, req.clone())).await
    }

    pub async fn config(&self) -> Result<ConfigServiceClient<Channel>> {
        Ok(config_client(self.channel().await?))
    }

    pub async fn cluster(&self) -> Result<ClusterServiceClient<Channel>> {
        Ok(cluster_client(self.channel().await?))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turns a gRPC status into an error whose message is the server's, with the
/// status kept for the exit code.
pub fn status(st: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(StatusError(st))
}

#[derive(Debug)]
pub struct StatusError(pub tonic::Status);

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for StatusError {}
