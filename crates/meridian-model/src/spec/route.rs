use serde::{Deserialize, Serialize};

use crate::Duration;

mod validate;

/// An HTTP route table: the hosts it answers for (one Envoy virtual host)
/// and ordered rules; the first rule whose match fits wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    pub hosts: Vec<String>,
    pub rules: Vec<Rule>,
}

/// One rule: any of `matches` (all when empty: prefix `/`) leads to exactly
/// one action: `backends`, `redirect` or `directResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderOps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderOps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// Exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `name` and exactly one of `exact`, `prefix`, `regex`, `present`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// `name` and exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    pub service: String,
    /// Relative share of traffic, 1-10000; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Backend {
    pub const DEFAULT_WEIGHT: u32 = 1;

    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(Self::DEFAULT_WEIGHT)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Envoy retry conditions (`5xx`, `connect-failure`, ...); default
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`'s
    /// safe subset: see `DEFAULT_ON`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
    /// Retries after the first try, 0-10; default 1. 0: never retry (and
    /// no failover default either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Status codes retried under `retriable-status-codes`, 400-599;
    /// default `[503]` when `on` names that condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

impl Retries {
    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(Self::DEFAULT_ATTEMPTS)
    }

    /// The conditions translation emits: `on`, else `DEFAULT_ON`.
    pub fn conditions(&self) -> Vec<&str> {
        if self.on.is_empty() {
            Self::DEFAULT_ON.to_vec()
        } else {
            self.on.iter().map(String::as_str).collect()
        }
    }

    /// The codes translation emits: `statusCodes`, else `[503]` when the
    /// conditions name `retriable-status-codes`, else none.
    pub fn status_codes(&self) -> Vec<u16> {
        if !self.status_codes.is_empty() {
            self.status_codes.clone()
        } else if self.on.iter().any(|c| c == "retriable-status-codes") {
            Self::DEFAULT_STATUS_CODES.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Conditions retried when `on` is empty: failures where the request
    /// certainly did not reach the application, so retrying is safe.
    pub const DEFAULT_ON: &'static [&'static str] = &["connect-failure", "refused-stream", "reset"];
    pub const DEFAULT_ATTEMPTS: u32 = 1;
    pub const DEFAULT_STATUS_CODES: &'static [u16] = &[503];
    /// A rule without `retries` whose backends include a service with
    /// `failover` gets this many retries: one to another host of the
    /// region, one to the next region (see `FAILOVER_ON`).
    pub const FAILOVER_ATTEMPTS: u32 = 2;
    /// The failover default for idempotent methods (RFC 9110: GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE): every failure outlier detection would
    /// eject a host for is retried elsewhere, so a failing region costs
    /// no request while another one is healthy.
    pub const FAILOVER_ON: &'static [&'static str] =
        &["5xx", "reset", "connect-failure", "refused-stream"];
    /// The failover default for every other method (POST, PATCH, ...):
    /// only failures where the request never reached the application.
    pub const FAILOVER_UNSAFE_ON: &'static [&'static str] =
        &["connect-failure", "refused-stream", "reset-before-request"];
    pub const IDEMPOTENT_METHODS: &'static [&'static str] =
        &["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
    /// Every condition Envoy's router accepts in `retry_on`.
    pub const CONDITIONS: &'static [&'static str] = &[
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    pub base: Duration,
    /// Default 10 × base (Envoy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the matched path prefix (rule must match on a path prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    /// Appended, keeping existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Replaces existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308; default 301.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Copies a share of requests to another service; responses are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub service: String,
    /// 0-100; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

impl RouteSpec {
    pub const MAX_BACKEND_WEIGHT: u32 = 10_000;

    /// Services this route sends traffic to (backends and mirrors).
    pub fn referenced_services(&self) -> impl Iterator<Item = (String, &str)> {
        self.rules.iter().enumerate().flat_map(|(i, r)| {
            let backends = r.backends.iter().enumerate().map(move |(j, b)| {
                (
                    format!("rules[{i}].backends[{j}].service"),
                    b.service.as_str(),
                )
            });
            let mirror = r
                .mirror
                .iter()
                .map(move |m| (format!("rules[{i}].mirror.service"), m.service.as_str()));
            backends.chain(mirror)
        })
    }
}
