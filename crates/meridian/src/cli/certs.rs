//! `meridian certs`: a development CA and the certificates of nodes, agents,
//! Envoys and operators, written into one directory. The work is done by
//! `meridian_pki::dev`; this is its command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use meridian_pki::dev::{self, DevSet, Written};
use meridian_pki::{format_utc, parse_period, Identity, LeafRequest, Role, TrustDomain, Validity};

use super::Global;
use crate::output::{print_value, Format};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA: ca.pem (give it to everyone) and ca-key.pem (keep it secret).
    InitCa {
        #[command(flatten)]
        out: Out,
        /// Trust domain of every identity this CA issues.
        #[arg(long, default_value = meridian_pki::DEFAULT_TRUST_DOMAIN)]
        trust_domain: TrustDomain,
        /// How long the CA is valid (e.g. 10y, 365d).
        #[arg(long, default_value = "10y", value_parser = parse_period)]
        valid_for: Duration,
    },
    /// A controller node's certificate (node-ID.pem), for all its listeners.
    Node {
        #[command(flatten)]
        out: Out,
        /// The node id (`node_id` of its config).
        #[arg(long)]
        id: u64,
        /// A DNS name or IP address the node is reached at (repeat for each).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        leaf: Leaf,
    },
    /// A federation agent's certificate, bound to one registered cluster (cluster-NAME.pem).
    Agent {
        #[command(flatten)]
        out: Out,
        #[arg(long)]
        cluster: String,
        #[command(flatten)]
        leaf: Leaf,
    },
    /// An Envoy's certificate for one proxy group, its `node.cluster` (proxy-GROUP.pem).
    Envoy {
        #[command(flatten)]
        out: Out,
        #[arg(long)]
        group: String,
        #[command(flatten)]
        leaf: Leaf,
    },
    /// An operator's certificate with a role: viewer, editor or admin (operator-NAME.pem).
    Operator {
        #[command(flatten)]
        out: Out,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        leaf: Leaf,
    },
    /// A CA and every certificate of a development deployment, in one go.
    DevSetup(DevSetupArgs),
}

#[derive(clap::Args, Debug)]
pub struct DevSetupArgs {
    #[command(flatten)]
    out: Out,
    #[arg(long, default_value = meridian_pki::DEFAULT_TRUST_DOMAIN)]
    trust_domain: TrustDomain,
    /// Node certificates for ids 1..=N.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Hosts every node certificate names.
    #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
    hosts: Vec<String>,
    /// An agent certificate for this cluster (repeat for each).
    #[arg(long = "cluster")]
    clusters: Vec<String>,
    /// An Envoy certificate for this proxy group (repeat for each).
    #[arg(long = "group", default_values = ["default"])]
    groups: Vec<String>,
    /// An operator certificate, NAME=ROLE (repeat for each).
    #[arg(long = "operator", default_values = ["admin=admin"], value_parser = parse_operator)]
    operators: Vec<(String, Role)>,
    #[arg(long, default_value = "10y", value_parser = parse_period)]
    ca_valid_for: Duration,
    #[command(flatten)]
    leaf: Leaf,
}

impl DevSetupArgs {
    fn set(self) -> DevSet {
        DevSet {
            trust_domain: self.trust_domain,
            nodes: self.nodes,
            hosts: self.hosts,
            clusters: self.clusters,
            groups: self.groups,
            operators: self.operators,
            ca_validity: self.ca_valid_for,
            leaf_validity: self.leaf.valid_for,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Out {
    /// Directory of the CA and the certificates.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Replace existing certificates and keys.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args, Debug)]
pub struct Leaf {
    /// How long the certificate is valid (e.g. 365d, 90d, 12h).
    #[arg(long, default_value = "365d", value_parser = parse_period)]
    valid_for: Duration,
}

fn parse_operator(s: &str) -> Result<(String, Role), String> {
    let (name, role) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=ROLE, e.g. alice=editor"))?;
    Ok((name.to_string(), role.parse()?))
}

pub fn run(cmd: CertsCommand, g: &Global) -> Result<()> {
    let written = match cmd {
        CertsCommand::InitCa {
            out,
            trust_domain,
            valid_for,
        } => vec![dev::init_ca(
            &out.dir,
            &trust_domain,
            Validity::for_period(valid_for),
            out.force,
        )?],
        CertsCommand::Node {
            out,
            id,
            hosts,
            leaf,
        } => issue(&out, Identity::Node { id }, hosts, &leaf)?,
        CertsCommand::Agent { out, cluster, leaf } => {
            issue(&out, Identity::Agent { cluster }, Vec::new(), &leaf)?
        }
        CertsCommand::Envoy { out, group, leaf } => {
            issue(&out, Identity::Proxy { group }, Vec::new(), &leaf)?
        }
        CertsCommand::Operator {
            out,
            name,
            role,
            leaf,
        } => issue(&out, Identity::Operator { name, role }, Vec::new(), &leaf)?,
        CertsCommand::DevSetup(args) => {
            let (dir, force) = (args.out.dir.clone(), args.out.force);
            dev::write_set(&dir, &args.set(), force)?
        }
    };
    report(&written, g.output)
}

fn issue(out: &Out, identity: Identity, hosts: Vec<String>, leaf: &Leaf) -> Result<Vec<Written>> {
    if !out.dir.join(dev::CA_CERT).exists() {
        bail!(
            "{} has no CA; create one first with `meridian certs init-ca --dir {}`",
            out.dir.display(),
            out.dir.display()
        );
    }
    let req = LeafRequest {
        identity,
        hosts,
        validity: Validity::for_period(leaf.valid_for),
    };
    Ok(vec![dev::issue(&out.dir, &req, out.force)?])
}

/// Paths, identities and expiry; never key material.
fn report(written: &[Written], format: Format) -> Result<()> {
    match format {
        Format::Json | Format::Yaml => {
            let list: Vec<serde_json::Value> = written
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "identity": w.uri,
                        "cert": w.cert,
                        "key": w.key,
                        "not_after": format_utc(w.not_after),
                    })
                })
                .collect();
            Ok(print_value(&serde_json::Value::Array(list), format)?)
        }
        Format::Table | Format::Wide => {
            for w in written {
                println!(
                    "{}: {} (key {}), valid until {}",
                    w.uri,
                    w.cert.display(),
                    w.key.display(),
                    format_utc(w.not_after)
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
