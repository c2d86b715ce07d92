//! Real `meridian agent` processes with a file source that the test edits.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::meridian_bin;

pub struct AgentProc {
    pub cluster: String,
    pub file: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    /// `RUST_LOG` of the process.
    log_filter: String,
    token: String,
    child: Option<Child>,
}

/// One endpoint line of the agent's file source.
pub fn endpoint(service: &str, port: u16) -> String {
    format!("  - {{service: {service}, address: 127.0.0.1, port: {port}}}\n")
}

impl AgentProc {
    /// Starts an agent for `cluster` reading `file`, probing endpoints over
    /// TCP every 500 ms, talking to `controllers` in order.
    pub fn start(dir: &std::path::Path, cluster: &str, region: &str, token: &str, controllers: &[String]) -> AgentProc {
        Self::start_with(dir, cluster, region, token, controllers, &[], "info")
    }

    /// As [`AgentProc::start`], with more flags (e.g. `--failback-interval
    /// 2s`) and a `RUST_LOG` filter of its own.
    pub fn start_with(dir: &std::path::Path, cluster: &str, region: &str, token: &str, controllers: &[String], extra: &[&str], log_filter: &str) -> AgentProc {
        let file = dir.join(format!("{cluster}-endpoints.yaml"));
        if !file.exists() {
            std::fs::write(&file, "endpoints: []\n").unwrap();
        }
        let args = vec![
            "agent".to_string(),
            "--cluster".into(),
            cluster.into(),
            "--region".into(),
            region.into(),
            "--controllers".into(),
            controllers.join(","),
            "--source".into(),
            format!("file:{}", file.display()),
            "--health-check".into(),
            "tcp".into(),
            "--health-interval".into(),
            "500ms".into(),
            "--unhealthy-threshold".into(),
            "2".into(),
            "--healthy-threshold".into(),
            "1".into(),
            "--poll-interval".into(),
            "200ms".into(),
        ];
        let args = args.into_iter().chain(extra.iter().map(|a| a.to_string())).collect();
        let mut a = AgentProc {
            cluster: cluster.into(),
            log: dir.join(format!("agent-{cluster}.log")),
            file,
            args,
            log_filter: log_filter.into(),
            token: token.into(),
            child: None,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(meridian_bin())
            .args(&self.args)
            .env("MERIDIAN_AGENT_TOKEN", &self.token)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start meridian agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replaces the declared endpoints.
    pub fn declare(&self, endpoints: &[(&str, u16)]) {
        let mut text = String::from("endpoints:\n");
        for (svc, port) in endpoints {
            text.push_str(&endpoint(svc, *port));
        }
        if endpoints.is_empty() {
            text = "endpoints: []\n".into();
        }
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("---- agent {} log (last 20 lines) ----", self.cluster);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
