//! `meridian proxy-status`: every Envoy connected to any controller, with
//! its per-type sync state, like `istioctl proxy-status`.

use anyhow::Result;
use meridian_proto::v1 as pb;
use serde_json::json;

use super::Global;
use crate::output::{print_value, table, Format};

#[derive(clap::Args, Debug)]
pub struct ProxyStatusArgs {
    /// Only this Envoy (node id).
    pub node_id: Option<String>,
}

fn age(ms: u64) -> String {
    match ms / 1000 {
        s @ 0..=119 => format!("{s}s"),
        s @ 120..=7199 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

pub async fn run(a: ProxyStatusArgs, g: &Global) -> Result<()> {
    let r = g
        .servers()
        .cluster_call(|mut c| async move {
            c.get_proxy_status(pb::ProxyStatusRequest { local_only: false })
                .await
        })
        .await?;
    let proxies: Vec<&pb::ProxyInfo> = r
        .proxies
        .iter()
        .filter(|p| a.node_id.as_ref().is_none_or(|n| &p.node_id == n))
        .collect();
    match g.output {
        Format::Json | Format::Yaml => {
            let items: Vec<_> = proxies
                .iter()
                .map(|p| {
                    json!({
                        "node_id": p.node_id, "region": p.region, "group": p.proxy_group,
                        "controller": p.controller_id, "controller_region": p.controller_region,
                        "variant": p.variant, "connected_ms": p.connected_ms,
                        "view_revision": p.view_revision, "synced_revision": p.synced_revision,
                        // From the stats the Envoy pushes; null when none arrived.
                        "traffic_1m": p.stats_reported.then(|| json!({
                            "requests": p.requests_1m, "errors_5xx": p.errors_1m,
                        })),
                        "types": p.types.iter().map(|t| json!({
                            "type": t.r#type, "state": t.state, "sent_version": t.sent_version,
                            "acked_version": t.acked_version, "acked": t.acked,
                            "last_ack_age_ms": t.last_ack_age_ms, "nack_message": t.nack_message,
                            "nack_resources": t.nack_resources, "resources": t.resources,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_value(&json!({"proxies": items, "errors": r.errors}), g.output)?;
        }
        Format::Table | Format::Wide => {
            let wide = g.output == Format::Wide;
            let cols = ["cds", "eds", "lds", "rds", "sds"];
            let rows: Vec<Vec<String>> = proxies
                .iter()
                .map(|p| {
                    let mut row = vec![
                        p.node_id.clone(),
                        p.region.clone(),
                        p.proxy_group.clone(),
                        format!("{} ({})", p.controller_id, p.controller_region),
                        p.variant.clone(),
                    ];
                    for c in cols {
                        row.push(
                            p.types
                                .iter()
                                .find(|t| t.r#type == c)
                                .map(|t| t.state.clone())
                                .unwrap_or_else(|| "-".into()),
                        );
                    }
                    let last = p
                        .types
                        .iter()
                        .filter(|t| t.acked)
                        .map(|t| t.last_ack_age_ms)
                        .min();
                    row.push(last.map(age).unwrap_or_else(|| "never".into()));
                    row.push(if p.synced_revision > 0 {
                        p.synced_revision.to_string()
                    } else {
                        "-".into()
                    });
                    if wide {
                        let (rq, err) = if p.stats_reported {
                            (p.requests_1m.to_string(), p.errors_1m.to_string())
                        } else {
                            ("-".into(), "-".into())
                        };
                        row.extend([rq, err]);
                    }
                    row
                })
                .collect();
            let mut headers = vec![
                "NODE",
                "REGION",
                "GROUP",
                "CONTROLLER",
                "VARIANT",
                "CDS",
                "EDS",
                "LDS",
                "RDS",
                "SDS",
                "LAST ACK",
                "REVISION",
            ];
            if wide {
                // Upstream requests and 5xx over the last minute.
                headers.extend(["RQ/1M", "5XX/1M"]);
            }
            if rows.is_empty() {
                eprintln!("no Envoys connected");
            } else {
                print!("{}", table(&headers, &rows));
            }
            for p in &proxies {
                for t in p.types.iter().filter(|t| !t.nack_message.is_empty()) {
                    println!(
                        "{} {} NACKED {:?}: {}",
                        p.node_id, t.r#type, t.nack_resources, t.nack_message
                    );
                }
            }
            for e in &r.errors {
                eprintln!("warning: {e}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// The Envoy's node id.
    pub node_id: String,
    /// Only resources of this type: cds, eds, lds, rds, sds.
    #[arg(long = "type")]
    pub kind: Option<String>,
}

/// `meridian proxy-config NODE_ID`: the resources served to one Envoy, as
/// JSON (the default) or a summary table.
pub async fn config(a: ProxyConfigArgs, g: &Global) -> Result<()> {
    let node_id = a.node_id.clone();
    let r = g
        .servers()
        .cluster_call(|mut c| {
            let node_id = node_id.clone();
            async move {
                c.get_proxy_config(pb::ProxyConfigRequest {
                    node_id,
                    local_only: false,
                })
                .await
            }
        })
        .await?;
    let resources: Vec<&pb::ProxyResource> = r
        .resources
        .iter()
        .filter(|x| a.kind.as_ref().is_none_or(|k| &x.r#type == k))
        .collect();
    let p = r.proxy.clone().unwrap_or_default();
    match g.output {
        Format::Table | Format::Wide => {
            println!(
                "{} (region {}, group {}) on controller {} ({}), {}",
                p.node_id, p.region, p.proxy_group, p.controller_id, p.controller_region, p.variant
            );
            let rows: Vec<Vec<String>> = resources
                .iter()
                .map(|x| {
                    vec![
                        x.r#type.clone(),
                        x.name.clone(),
                        x.version.chars().take(12).collect(),
                        x.state.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&["TYPE", "NAME", "VERSION", "STATE"], &rows));
        }
        _ => {
            let items: Vec<_> = resources
                .iter()
                .map(|x| json!({"type": x.r#type, "name": x.name, "version": x.version, "state": x.state, "resource": x.text}))
                .collect();
            let out = json!({
                "node_id": p.node_id, "region": p.region, "group": p.proxy_group,
                "controller": p.controller_id, "variant": p.variant, "resources": items,
            });
            // JSON unless YAML was asked for: the point is to feed it to tools.
            print_value(
                &out,
                if g.output == Format::Yaml {
                    Format::Yaml
                } else {
                    Format::Json
                },
            )?;
        }
    }
    Ok(())
}
