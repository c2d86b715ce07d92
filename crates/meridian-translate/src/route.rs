use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                data_source::Specifier, header_value_option::HeaderAppendAction, DataSource,
                HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
            },
            route::v3::{
                header_matcher::HeaderMatchSpecifier,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                retry_policy::{self, RetryBackOff, RetryHostPredicate, RetryPriority},
                route::Action,
                route_action::{ClusterSpecifier, HostRewriteSpecifier, RequestMirrorPolicy},
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
                RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
                WeightedCluster,
            },
        },
        extensions::retry::{
            host::previous_hosts::v3::PreviousHostsPredicate,
            priority::previous_priorities::v3::PreviousPrioritiesConfig,
        },
        r#type::{
            matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher},
            v3::{fractional_percent::DenominatorType, FractionalPercent},
        },
    },
    google::protobuf::{Duration, UInt32Value},
};
use envoy_types::util::pack_any;
use meridian_model::{
    spec::{HeaderOps, Match, Retries, Rule},
    ConfigSet, ListenerSpec,
};

use crate::TranslateError;

pub(crate) fn duration(d: meridian_model::Duration) -> Duration {
    let ms = d.as_millis();
    Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// One RouteConfiguration per listener, named after it, with one virtual
/// host per Route object in the order the listener lists them.
pub(crate) fn build(
    config: &ConfigSet,
    listener: &str,
    l: &ListenerSpec,
) -> Result<RouteConfiguration, TranslateError> {
    let mut virtual_hosts = Vec::new();
    for (i, route_name) in l.routes.iter().enumerate() {
        let spec = config
            .route(route_name)
            .ok_or_else(|| TranslateError::Unresolved {
                from: format!("listener/{listener}"),
                field: format!("routes[{i}]"),
                kind: "route",
                name: route_name.clone(),
            })?;
        let mut routes = Vec::new();
        for (r, rule) in spec.rules.iter().enumerate() {
            for (bi, b) in rule.backends.iter().enumerate() {
                if config.service(&b.service).is_none() {
                    return Err(TranslateError::Unresolved {
                        from: format!("route/{route_name}"),
                        field: format!("rules[{r}].backends[{bi}].service"),
                        kind: "service",
                        name: b.service.clone(),
                    });
                }
            }
            let action = action(rule);
            let default_match = [Match::default()];
            let matches = if rule.matches.is_empty() {
                &default_match[..]
            } else {
                &rule.matches[..]
            };
            let failover = rule.backends.iter().any(|b| {
                config
                    .service(&b.service)
                    .is_some_and(|s| s.failover.is_some())
            });
            // Envoy routes have one match each: a rule with several matches
            // becomes consecutive routes sharing the action (and the
            // failover retry default splits a match by method).
            for (m, mt) in matches.iter().enumerate() {
                for (suffix, rm, retry) in retry_variants(rule, mt, failover) {
                    let mut action = action.clone();
                    if let Action::Route(ra) = &mut action {
                        ra.retry_policy = retry;
                    }
                    let mut route = Route {
                        name: format!("{route_name}/{r}/{m}{suffix}"),
                        r#match: Some(route_match(&rm)),
                        action: Some(action),
                        ..Default::default()
                    };
                    if let Some(ops) = &rule.request_headers {
                        route.request_headers_to_add = header_options(ops);
                        route.request_headers_to_remove = ops.remove.clone();
                    }
                    if let Some(ops) = &rule.response_headers {
                        route.response_headers_to_add = header_options(ops);
                        route.response_headers_to_remove = ops.remove.clone();
                    }
                    routes.push(route);
                }
            }
        }
        virtual_hosts.push(VirtualHost {
            name: route_name.clone(),
            domains: spec.hosts.clone(),
            routes,
            ..Default::default()
        });
    }
    Ok(RouteConfiguration {
        name: listener.to_string(),
        virtual_hosts,
        ..Default::default()
    })
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

fn string_match(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn route_match(m: &Match) -> RouteMatch {
    let path = m.path.as_ref();
    let path_specifier = match (
        path.and_then(|p| p.exact.clone()),
        path.and_then(|p| p.regex.clone()),
    ) {
        (Some(exact), _) => PathSpecifier::Path(exact),
        (None, Some(re)) => PathSpecifier::SafeRegex(regex(&re)),
        _ => PathSpecifier::Prefix(
            path.and_then(|p| p.prefix.clone())
                .unwrap_or_else(|| "/".into()),
        ),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| {
            let spec = if let Some(v) = &h.exact {
                HeaderMatchSpecifier::StringMatch(string_match(MatchPattern::Exact(v.clone())))
            } else if let Some(v) = &h.prefix {
                HeaderMatchSpecifier::StringMatch(string_match(MatchPattern::Prefix(v.clone())))
            } else if let Some(v) = &h.regex {
                HeaderMatchSpecifier::StringMatch(string_match(MatchPattern::SafeRegex(regex(v))))
            } else {
                HeaderMatchSpecifier::PresentMatch(h.present.unwrap_or(true))
            };
            HeaderMatcher {
                name: h.name.clone(),
                header_match_specifier: Some(spec),
                ..Default::default()
            }
        })
        .collect();
    if !m.methods.is_empty() {
        // Envoy has no method matcher in RouteMatch; `:method` is a header.
        let re = format!("^({})$", m.methods.join("|"));
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_match(
                MatchPattern::SafeRegex(regex(&re)),
            ))),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|q| {
            let spec = if let Some(v) = &q.exact {
                QueryParameterMatchSpecifier::StringMatch(string_match(MatchPattern::Exact(
                    v.clone(),
                )))
            } else if let Some(v) = &q.regex {
                QueryParameterMatchSpecifier::StringMatch(string_match(MatchPattern::SafeRegex(
                    regex(v),
                )))
            } else {
                QueryParameterMatchSpecifier::PresentMatch(q.present.unwrap_or(true))
            };
            QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(spec),
            }
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    }
}

fn action(rule: &Rule) -> Action {
    if let Some(rd) = &rule.redirect {
        return Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: rd
                .scheme
                .clone()
                .map(SchemeRewriteSpecifier::SchemeRedirect),
            host_redirect: rd.host.clone().unwrap_or_default(),
            port_redirect: rd.port.map(u32::from).unwrap_or(0),
            path_rewrite_specifier: rd.path.clone().map(PathRewriteSpecifier::PathRedirect),
            response_code: match rd.code.unwrap_or(301) {
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                _ => RedirectResponseCode::MovedPermanently,
            } as i32,
            ..Default::default()
        });
    }
    if let Some(d) = &rule.direct_response {
        return Action::DirectResponse(DirectResponseAction {
            status: d.status.into(),
            body: d.body.as_ref().map(|b| DataSource {
                specifier: Some(Specifier::InlineString(b.clone())),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let cluster_specifier = match rule.backends.as_slice() {
        [one] => ClusterSpecifier::Cluster(one.service.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|b| ClusterWeight {
                    name: b.service.clone(),
                    weight: Some(UInt32Value { value: b.weight() }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let mut ra = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    ra.timeout = rule.timeout.map(duration);
    if let Some(rw) = &rule.rewrite {
        ra.prefix_rewrite = rw.path_prefix.clone().unwrap_or_default();
        ra.host_rewrite_specifier = rw
            .host
            .clone()
            .map(HostRewriteSpecifier::HostRewriteLiteral);
    }
    if let Some(m) = &rule.mirror {
        ra.request_mirror_policies = vec![RequestMirrorPolicy {
            cluster: m.service.clone(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: m.percent.unwrap_or(100),
                    denominator: DenominatorType::Hundred as i32,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }];
    }
    Action::Route(ra)
}

fn header_options(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    let add = ops
        .add
        .iter()
        .map(|h| (h, HeaderAppendAction::AppendIfExistsOrAdd));
    let set = ops
        .set
        .iter()
        .map(|h| (h, HeaderAppendAction::OverwriteIfExistsOrAdd));
    add.chain(set)
        .map(|(h, action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: h.name.clone(),
                value: h.value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

/// The Envoy routes one match of a rule becomes, each with its retry
/// policy: one route, unless the rule has no `retries` and sends to a
/// service with `failover`. Then idempotent methods get the failover
/// default (5xx and resets retried on another host, then region) and a
/// second route after it catches every other method with the retries that
/// are safe for them (the request never reached the application). Envoy
/// matches routes in order, so the second only sees what the first left.
fn retry_variants(
    rule: &Rule,
    m: &Match,
    failover: bool,
) -> Vec<(&'static str, Match, Option<RetryPolicy>)> {
    if rule.backends.is_empty() {
        return vec![("", m.clone(), None)];
    }
    if let Some(r) = &rule.retries {
        let policy = (r.attempts() > 0).then(|| {
            let mut p = retry_policy(&r.conditions(), r.attempts(), failover);
            p.retriable_status_codes = r.status_codes().into_iter().map(u32::from).collect();
            p.per_try_timeout = r.per_try_timeout.map(duration);
            p.retry_back_off = r.backoff.as_ref().map(|b| RetryBackOff {
                base_interval: Some(duration(b.base)),
                max_interval: b.max.map(duration),
            });
            p
        });
        return vec![("", m.clone(), policy)];
    }
    if !failover {
        return vec![("", m.clone(), None)];
    }
    let idempotent: Vec<String> = if m.methods.is_empty() {
        Retries::IDEMPOTENT_METHODS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        m.methods
            .iter()
            .filter(|x| Retries::IDEMPOTENT_METHODS.contains(&x.as_str()))
            .cloned()
            .collect()
    };
    let others = m.methods.is_empty() || idempotent.len() < m.methods.len();
    let attempts = Retries::FAILOVER_ATTEMPTS;
    let mut out = Vec::new();
    if !idempotent.is_empty() {
        let only = Match {
            methods: idempotent,
            ..m.clone()
        };
        let policy = retry_policy(Retries::FAILOVER_ON, attempts, true);
        out.push(("", only, Some(policy)));
    }
    if others {
        let policy = retry_policy(Retries::FAILOVER_UNSAFE_ON, attempts, true);
        let suffix = if out.is_empty() {
            ""
        } else {
            "/non-idempotent"
        };
        out.push((suffix, m.clone(), Some(policy)));
    }
    out
}

/// A retry never picks a host it already tried (Envoy's default may pick
/// the same failing host again); to a service with `failover`, the last
/// retries also leave the priority (region) already tried, so a failing
/// region is not retried into itself.
fn retry_policy(on: &[&str], attempts: u32, failover: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value { value: attempts }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack_any(PreviousHostsPredicate {}),
            )),
        }],
        host_selection_retry_max_attempts: 3,
        // With two or more retries the first stays in the region (another
        // host), the later ones go to the next region; with one, it leaves
        // at once.
        retry_priority: failover.then(|| RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
                pack_any(PreviousPrioritiesConfig {
                    update_frequency: if attempts >= 2 { 2 } else { 1 },
                }),
            )),
        }),
        ..Default::default()
    }
}
