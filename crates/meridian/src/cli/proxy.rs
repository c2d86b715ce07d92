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
        .cluster_call(|mut c| async move { c.get_proxy_status(pb::ProxyStatusRequest { local_only: false }).await })
        .await?;
    let proxies: Vec<&pb::ProxyInfo> =
        r.proxies.iter().filter(|p| a.node_id.as_ref().is_none_or(|n| &p.node_id == n)).collect();
    match g.output {
        Format::Json | Format::Yaml => {
            let items: Vec<_> = proxies
                .iter()
                .map(|p| {
                    json!({
                        "node_id": p.node_id, "region": p.region, "group": p.proxy_group,
                        "controller": p.controller_id, "controller_region": p.controller_region,
                        "variant": p.variant, "connected_ms": p.connected_ms,
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
                        row.push(p.types.iter().find(|t| t.r#type == c).map(|t| t.state.clone()).unwrap_or_else(|| "-".into()));
                    }
                    let last = p.types.iter().filter(|t| t.acked).map(|t| t.last_ack_age_ms).min();
                    row.push(last.map(age).unwrap_or_else(|| "never".into()));
                    row
                })
                .collect();
            let headers = ["NODE", "REGION", "GROUP", "CONTROLLER", "VARIANT", "CDS", "EDS", "LDS", "RDS", "SDS", "LAST ACK"];
            if rows.is_empty() {
                eprintln!("no Envoys connected");
            } else {
                print!("{}", table(&headers, &rows));
            }
            for p in &proxies {
                for t in p.types.iter().filter(|t| !t.nack_message.is_empty()) {
                    println!("{} {} NACKED {:?}: {}", p.node_id, t.r#type, t.nack_resources, t.nack_message);
                }
            }
            for e in &r.errors {
                eprintln!("warning: {e}");
            }
        }
    }
    Ok(())
}
