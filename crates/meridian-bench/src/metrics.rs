//! Reading one counter from a Prometheus text endpoint. A raw HTTP/1.1 GET
//! over a TCP stream: both meridian's admin listener and etcd's client port
//! answer it, and it keeps an HTTP client out of the binary's dependencies.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The text of `http://addr/metrics` (the scheme and a trailing slash are
/// optional).
async fn metrics_text(addr: &str) -> Result<String> {
    let addr = addr
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    tokio::time::timeout(Duration::from_secs(5), get(addr, "/metrics"))
        .await
        .context("timed out")?
}

/// The value of the unlabelled sample `name` at `http://addr/metrics`.
pub async fn scrape(addr: &str, name: &str) -> Result<u64> {
    let body = metrics_text(addr).await?;
    for line in body.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(name) {
            let v: f64 = parts
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("unreadable sample {line:?}"))?;
            return Ok(v as u64);
        }
    }
    bail!("no sample named {name}")
}

pub async fn get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    // `Connection: close` lets the body end at EOF, so neither chunked
    // encoding nor Content-Length needs handling.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP header in the answer")?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        bail!("GET {path}: {status}");
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// Joins the chunks of a chunked body (servers may chunk even with
/// `Connection: close`).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum over every sample (any labels) of each of `names`, in order; a
/// name with no sample reads 0.
pub async fn scrape_sums(addr: &str, names: &[&str]) -> Result<Vec<f64>> {
    let body = metrics_text(addr).await?;
    let mut out = vec![0.0; names.len()];
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or(series);
        if let Some(i) = names.iter().position(|n| *n == metric) {
            if let Ok(v) = value.trim().parse::<f64>() {
                out[i] += v;
            }
        }
    }
    Ok(out)
}
