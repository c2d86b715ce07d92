use std::collections::BTreeSet;

use super::*;
use crate::{
    error::Errors,
    spec::{check_duration, check_range, check_ref_name},
};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl RouteSpec {
    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        if self.hosts.is_empty() {
            errs.push("hosts", "at least one host is required; use \"*\" for any");
        }
        let mut seen = BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(reason) = check_host(h) {
                errs.push(format!("hosts[{i}]"), reason);
            }
            if !seen.insert(h) {
                errs.push(
                    format!("hosts[{i}]"),
                    format!("host \"{h}\" is listed twice"),
                );
            }
        }
        if self.rules.is_empty() {
            errs.push("rules", "at least one rule is required");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("rules[{i}]"), errs);
        }
    }
}

/// Envoy virtual host domains: a name with an optional port, or a single
/// `*` as the whole name, as a leading `*.`/`*-` or as a trailing `.*`.
fn check_host(h: &str) -> Result<(), String> {
    if h == "*" {
        return Ok(());
    }
    if h.is_empty() || h.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    if h.chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-*:".contains(c)))
    {
        return Err(format!("\"{h}\" may only contain lowercase letters, digits, '.', '-', ':' and one leading or trailing '*'"));
    }
    let stars = h.matches('*').count();
    if stars > 1 || (stars == 1 && !h.starts_with('*') && !h.ends_with('*')) {
        return Err(format!(
            "\"{h}\": '*' is only allowed once, at the start or the end"
        ));
    }
    Ok(())
}

fn check_regex(errs: &mut Errors<'_>, path: &str, re: &str) {
    // The regex crate's syntax is close to RE2's (Envoy's engine): both
    // reject look-around and back-references.
    if let Err(e) = regex::Regex::new(re) {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        errs.push(path, format!("invalid regex: {first}"));
    }
    if re.len() > 1024 {
        errs.push(path, "regex longer than 1024 characters");
    }
}

fn check_header_name(errs: &mut Errors<'_>, path: &str, name: &str, modify: bool) {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.char_indices().all(|(i, c)| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || "-_.".contains(c)
                || (i == 0 && c == ':' && !modify)
        });
    if !ok {
        errs.push(path, format!("\"{name}\" is not a lowercase header name"));
    } else if modify && name == "host" {
        errs.push(
            path,
            "the host header cannot be modified here; use rewrite.host",
        );
    }
}

fn exactly_one(errs: &mut Errors<'_>, path: &str, set: &[(&str, bool)]) {
    let given: Vec<&str> = set.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
    if given.len() != 1 {
        let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
        let found = if given.is_empty() {
            "none".to_string()
        } else {
            given.join(", ")
        };
        errs.push(
            path,
            format!(
                "exactly one of {} is required, found {found}",
                names.join(", ")
            ),
        );
    }
}

impl Rule {
    fn validate(&self, at: &str, errs: &mut Errors<'_>) {
        for (m, mt) in self.matches.iter().enumerate() {
            mt.validate(&format!("{at}.matches[{m}]"), errs);
        }
        exactly_one(
            errs,
            at,
            &[
                ("backends", !self.backends.is_empty()),
                ("redirect", self.redirect.is_some()),
                ("directResponse", self.direct_response.is_some()),
            ],
        );
        if self.backends.is_empty() {
            for (field, set) in [
                ("timeout", self.timeout.is_some()),
                ("retries", self.retries.is_some()),
                ("rewrite", self.rewrite.is_some()),
                ("mirror", self.mirror.is_some()),
            ] {
                if set {
                    errs.push(format!("{at}.{field}"), "only allowed with backends");
                }
            }
        }
        let mut sum: u64 = 0;
        let mut bad_weight = false;
        for (j, b) in self.backends.iter().enumerate() {
            check_ref_name(errs, &format!("{at}.backends[{j}].service"), &b.service);
            if let Some(w) = b.weight {
                bad_weight |= w == 0 || w > RouteSpec::MAX_BACKEND_WEIGHT;
                check_range(
                    errs,
                    &format!("{at}.backends[{j}].weight"),
                    w.into(),
                    1,
                    RouteSpec::MAX_BACKEND_WEIGHT.into(),
                );
            }
            sum += u64::from(b.weight());
        }
        // With every weight in 1..=10000 the sum is positive; the check is
        // kept so the rule holds even if the per-weight range changes.
        if !self.backends.is_empty() && sum == 0 && !bad_weight {
            errs.push(
                format!("{at}.backends"),
                "weights must sum to a positive number",
            );
        }
        check_duration(errs, &format!("{at}.timeout"), self.timeout, 0, 3_600_000);
        if let Some(r) = &self.retries {
            for (k, c) in r.on.iter().enumerate() {
                if !Retries::CONDITIONS.contains(&c.as_str()) {
                    errs.push(
                        format!("{at}.retries.on[{k}]"),
                        format!(
                            "unknown retry condition \"{c}\"{}",
                            crate::suggest::did_you_mean(c, Retries::CONDITIONS.iter().copied())
                        ),
                    );
                }
            }
            if let Some(a) = r.attempts {
                check_range(errs, &format!("{at}.retries.attempts"), a.into(), 0, 10);
            }
            let mut seen = BTreeSet::new();
            for (k, code) in r.status_codes.iter().enumerate() {
                let path = format!("{at}.retries.statusCodes[{k}]");
                check_range(errs, &path, (*code).into(), 400, 599);
                if !seen.insert(code) {
                    errs.push(path, format!("status code {code} is listed twice"));
                }
            }
            if !r.status_codes.is_empty() && !r.on.iter().any(|c| c == "retriable-status-codes") {
                errs.push(
                    format!("{at}.retries.statusCodes"),
                    "only used with the condition retriable-status-codes in retries.on",
                );
            }
            check_duration(
                errs,
                &format!("{at}.retries.perTryTimeout"),
                r.per_try_timeout,
                1,
                3_600_000,
            );
            if let Some(b) = &r.backoff {
                check_duration(
                    errs,
                    &format!("{at}.retries.backoff.base"),
                    Some(b.base),
                    1,
                    60_000,
                );
                if let Some(max) = b.max {
                    if max < b.base {
                        errs.push(
                            format!("{at}.retries.backoff.max"),
                            "must not be less than base",
                        );
                    }
                }
            }
        }
        if let Some(rw) = &self.rewrite {
            if let Some(p) = &rw.path_prefix {
                if !p.starts_with('/') {
                    errs.push(format!("{at}.rewrite.pathPrefix"), "must start with '/'");
                }
                let prefix_only = !self.matches.is_empty()
                    && self
                        .matches
                        .iter()
                        .all(|m| m.path.as_ref().is_some_and(|p| p.prefix.is_some()));
                if !prefix_only && !self.matches.is_empty() {
                    errs.push(
                        format!("{at}.rewrite.pathPrefix"),
                        "needs every match of the rule to use path.prefix",
                    );
                }
            }
            if let Some(h) = &rw.host {
                if let Err(reason) = check_host(h) {
                    errs.push(format!("{at}.rewrite.host"), reason);
                } else if h.contains('*') {
                    errs.push(format!("{at}.rewrite.host"), "must not contain '*'");
                }
            }
        }
        for (field, ops) in [
            ("requestHeaders", &self.request_headers),
            ("responseHeaders", &self.response_headers),
        ] {
            let Some(ops) = ops else { continue };
            for (list, values) in [("add", &ops.add), ("set", &ops.set)] {
                for (k, hv) in values.iter().enumerate() {
                    check_header_name(
                        errs,
                        &format!("{at}.{field}.{list}[{k}].name"),
                        &hv.name,
                        true,
                    );
                    if hv.value.contains(['\r', '\n', '\0']) {
                        errs.push(
                            format!("{at}.{field}.{list}[{k}].value"),
                            "must not contain CR, LF or NUL",
                        );
                    }
                }
            }
            for (k, name) in ops.remove.iter().enumerate() {
                check_header_name(errs, &format!("{at}.{field}.remove[{k}]"), name, true);
            }
        }
        if let Some(rd) = &self.redirect {
            if let Some(s) = &rd.scheme {
                if s != "http" && s != "https" {
                    errs.push(format!("{at}.redirect.scheme"), "must be http or https");
                }
            }
            if let Some(h) = &rd.host {
                if check_host(h).is_err() || h.contains('*') {
                    errs.push(
                        format!("{at}.redirect.host"),
                        format!("\"{h}\" is not a host name"),
                    );
                }
            }
            if let Some(p) = &rd.path {
                if !p.starts_with('/') {
                    errs.push(format!("{at}.redirect.path"), "must start with '/'");
                }
            }
            if let Some(p) = rd.port {
                check_range(errs, &format!("{at}.redirect.port"), p.into(), 1, 65535);
            }
            if let Some(c) = rd.code {
                if ![301, 302, 303, 307, 308].contains(&c) {
                    errs.push(
                        format!("{at}.redirect.code"),
                        "must be one of 301, 302, 303, 307, 308",
                    );
                }
            }
        }
        if let Some(d) = &self.direct_response {
            check_range(
                errs,
                &format!("{at}.directResponse.status"),
                d.status.into(),
                200,
                599,
            );
            if d.body.as_ref().is_some_and(|b| b.len() > 4096) {
                errs.push(
                    format!("{at}.directResponse.body"),
                    "must be at most 4096 bytes (Envoy's limit)",
                );
            }
        }
        if let Some(m) = &self.mirror {
            check_ref_name(errs, &format!("{at}.mirror.service"), &m.service);
            if let Some(p) = m.percent {
                check_range(errs, &format!("{at}.mirror.percent"), p.into(), 0, 100);
            }
        }
    }
}

impl Match {
    fn validate(&self, at: &str, errs: &mut Errors<'_>) {
        if let Some(p) = &self.path {
            let path = format!("{at}.path");
            exactly_one(
                errs,
                &path,
                &[
                    ("exact", p.exact.is_some()),
                    ("prefix", p.prefix.is_some()),
                    ("regex", p.regex.is_some()),
                ],
            );
            for (field, v) in [("exact", &p.exact), ("prefix", &p.prefix)] {
                if v.as_ref().is_some_and(|v| !v.starts_with('/')) {
                    errs.push(format!("{path}.{field}"), "must start with '/'");
                }
            }
            if let Some(re) = &p.regex {
                check_regex(errs, &format!("{path}.regex"), re);
            }
        }
        for (k, h) in self.headers.iter().enumerate() {
            let path = format!("{at}.headers[{k}]");
            check_header_name(errs, &format!("{path}.name"), &h.name, false);
            exactly_one(
                errs,
                &path,
                &[
                    ("exact", h.exact.is_some()),
                    ("prefix", h.prefix.is_some()),
                    ("regex", h.regex.is_some()),
                    ("present", h.present.is_some()),
                ],
            );
            if let Some(re) = &h.regex {
                check_regex(errs, &format!("{path}.regex"), re);
            }
        }
        for (k, q) in self.query_params.iter().enumerate() {
            let path = format!("{at}.queryParams[{k}]");
            if q.name.is_empty() {
                errs.push(format!("{path}.name"), "must not be empty");
            }
            exactly_one(
                errs,
                &path,
                &[
                    ("exact", q.exact.is_some()),
                    ("regex", q.regex.is_some()),
                    ("present", q.present.is_some()),
                ],
            );
            if let Some(re) = &q.regex {
                check_regex(errs, &format!("{path}.regex"), re);
            }
        }
        let mut seen = BTreeSet::new();
        for (k, m) in self.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                errs.push(
                    format!("{at}.methods[{k}]"),
                    format!(
                        "unknown method \"{m}\"{}",
                        crate::suggest::did_you_mean(m, METHODS.iter().copied())
                    ),
                );
            }
            if !seen.insert(m) {
                errs.push(
                    format!("{at}.methods[{k}]"),
                    format!("method {m} is listed twice"),
                );
            }
        }
    }
}
