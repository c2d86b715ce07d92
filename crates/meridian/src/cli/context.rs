//! The CLI's config file, kubeconfig-style: named contexts, each a list of
//! controller addresses (and, for a secure cluster, the CA bundle, client
//! certificate and key), and the current one. `--ca`/`--cert`/`--key`
//! (or `MERIDIAN_CA`/`MERIDIAN_CERT`/`MERIDIAN_KEY`) win over a context's. `--server` and
//! `MERIDIAN_SERVER` win over it; `--context` picks another context for one
//! command. The file is `$MERIDIAN_CONFIG`, else
//! `~/.config/meridian/config.yaml`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::Global;
use crate::output::{table, Format};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NamedContext {
    pub name: String,
    pub servers: Vec<String>,
    /// CA bundle the controllers' certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate (an `operator/ROLE/NAME` identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Make a context the current one.
    UseContext { name: String },
    /// Create or change a context; `--ca`, `--cert` and `--key` given with it
    /// are stored in it (as absolute paths).
    SetContext {
        name: String,
        /// Controller API addresses (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<String>,
    },
    /// Delete a context.
    DeleteContext { name: String },
    /// Print the config file.
    View,
}

pub fn path() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("MERIDIAN_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME").context("HOME is not set; set MERIDIAN_CONFIG to the CLI config file")?;
    Ok(PathBuf::from(home).join(".config/meridian/config.yaml"))
}

pub fn load() -> Result<CliConfig> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a meridian CLI config", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save(cfg: &CliConfig) -> Result<()> {
    let p = path()?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&p, serde_yaml_ng::to_string(cfg)?).with_context(|| format!("writing {}", p.display()))
}

/// The named context, or the current one (`None` when there is no current one).
pub fn context_for(context: Option<&str>) -> Result<Option<NamedContext>> {
    let cfg = load()?;
    let name = match context.or(cfg.current_context.as_deref()) {
        Some(n) => n.to_string(),
        None => return Ok(None),
    };
    match cfg.contexts.into_iter().find(|c| c.name == name) {
        Some(c) => Ok(Some(c)),
        None => bail!("context {name:?} is not in {}; see `meridian config get-contexts`", path()?.display()),
    }
}

fn absolute(p: &Option<PathBuf>, flag: &str) -> Result<Option<PathBuf>> {
    match p {
        None => Ok(None),
        Some(p) => std::fs::canonicalize(p).map(Some).with_context(|| format!("--{flag} {}", p.display())),
    }
}

pub fn run(cmd: ConfigCmd, g: &Global) -> Result<()> {
    let mut cfg = load()?;
    match cmd {
        ConfigCmd::GetContexts => {
            let rows: Vec<Vec<String>> = cfg
                .contexts
                .iter()
                .map(|c| {
                    let cur = if cfg.current_context.as_deref() == Some(c.name.as_str()) { "*" } else { "" };
                    let tls = if c.cert.is_some() { "mtls" } else { "" };
                    vec![cur.to_string(), c.name.clone(), c.servers.join(","), tls.to_string()]
                })
                .collect();
            if g.output == Format::Json || g.output == Format::Yaml {
                crate::output::print_value(&serde_json::to_value(&cfg)?, g.output)?;
            } else if rows.is_empty() {
                eprintln!("no contexts in {}; add one with `meridian config set-context NAME --server ADDR`", path()?.display());
            } else {
                print!("{}", table(&["CURRENT", "NAME", "SERVERS", "TLS"], &rows));
            }
        }
        ConfigCmd::UseContext { name } => {
            if !cfg.contexts.iter().any(|c| c.name == name) {
                bail!("context {name:?} does not exist; see `meridian config get-contexts`");
            }
            cfg.current_context = Some(name.clone());
            save(&cfg)?;
            println!("switched to context {name:?}");
        }
        ConfigCmd::SetContext { name, server } => {
            let (ca, cert, key) = (absolute(&g.ca, "ca")?, absolute(&g.cert, "cert")?, absolute(&g.key, "key")?);
            match cfg.contexts.iter_mut().find(|c| c.name == name) {
                Some(c) => {
                    c.servers = server;
                    c.ca = ca.or(c.ca.take());
                    c.cert = cert.or(c.cert.take());
                    c.key = key.or(c.key.take());
                }
                None => cfg.contexts.push(NamedContext { name: name.clone(), servers: server, ca, cert, key }),
            }
            if cfg.current_context.is_none() {
                cfg.current_context = Some(name.clone());
            }
            save(&cfg)?;
            println!("context {name:?} set");
        }
        ConfigCmd::DeleteContext { name } => {
            let before = cfg.contexts.len();
            cfg.contexts.retain(|c| c.name != name);
            if cfg.contexts.len() == before {
                bail!("context {name:?} does not exist");
            }
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                cfg.current_context = None;
            }
            save(&cfg)?;
            println!("context {name:?} deleted");
        }
        ConfigCmd::View => print!("{}", serde_yaml_ng::to_string(&cfg)?),
    }
    Ok(())
}
