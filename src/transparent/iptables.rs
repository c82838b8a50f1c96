//! The nat rules that send a pod's traffic through remora, laid out like
//! Istio's `istio-iptables`: `REMORA_*` chains hang off `PREROUTING` (inbound)
//! and `OUTPUT` (outbound) of table `nat`.
//!
//! - inbound: TCP to any port but the admin port and
//!   `exclude_inbound_ports` is redirected to the inbound listener (15006);
//! - outbound: TCP from any uid but the proxy's (`proxy_uid` / `--uid`) and
//!   `exclude_uids`, not leaving through `lo` (loopback and the pod's own
//!   addresses), not to `exclude_outbound_cidrs` or `exclude_outbound_ports`,
//!   is redirected to the transparent listener (15001). remora's own
//!   connections are what the uid exclusion lets out unredirected.
//!
//! `rules` renders `iptables-restore` input. `apply` first removes every
//! `REMORA_*` rule and chain (`cleanup`), then loads the rules with
//! `iptables-restore --noflush`, so applying twice leaves one copy; IPv6 gets
//! the same rules through `ip6tables` when `ipv6` is set. Rejects nothing
//! itself: the configuration was validated when loaded.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::config::{Cidr, Config, InboundConfig, TransparentConfig};

/// Every chain remora creates, in the order they are declared and removed.
pub const CHAINS: [&str; 4] = [
    "REMORA_INBOUND",
    "REMORA_IN_REDIRECT",
    "REMORA_OUTPUT",
    "REMORA_REDIRECT",
];

/// The jumps from built-in chains into remora's.
const JUMPS: [(&str, &str); 2] = [
    ("PREROUTING", "REMORA_INBOUND"),
    ("OUTPUT", "REMORA_OUTPUT"),
];

/// At most this many copies of a jump are removed by one cleanup (rules
/// added by hand more often than that are left to the operator).
const MAX_JUMP_COPIES: usize = 64;

/// iptables or ip6tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.ip.is_ipv4() == (self == Family::V4)
    }
}

/// What the rules redirect and exclude.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The inbound listener's port; no inbound redirection when `None`.
    pub inbound_port: Option<u16>,
    pub outbound_port: u16,
    /// Never redirected inbound (health probes reach the admin listener).
    pub admin_port: u16,
    pub proxy_uid: u32,
    pub exclude_uids: Vec<u32>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    pub exclude_inbound_ports: Vec<u16>,
    pub ipv6: bool,
}

impl RuleSet {
    /// The rules for a configuration with a `transparent:` section.
    pub fn new(
        transparent: &TransparentConfig,
        inbound: Option<&InboundConfig>,
        admin_port: u16,
    ) -> Self {
        Self {
            inbound_port: inbound.map(|inbound| inbound.listen.port()),
            outbound_port: transparent.outbound_listen.port(),
            admin_port,
            proxy_uid: transparent.proxy_uid,
            exclude_uids: transparent.exclude_uids.clone(),
            exclude_outbound_ports: transparent.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: transparent.exclude_outbound_cidrs.clone(),
            exclude_inbound_ports: transparent.exclude_inbound_ports.clone(),
            ipv6: transparent.ipv6,
        }
    }

    /// The rules of `config`; `None` when it has no `transparent:` section.
    pub fn from_config(config: &Config) -> Option<Self> {
        let transparent = config.transparent.as_ref()?;
        Some(Self::new(
            transparent,
            config.inbound.as_ref(),
            config.admin.listen.port(),
        ))
    }

    /// The rules of the default configuration: 15006 inbound, 15001
    /// outbound, 15000 admin, uid 1337.
    pub fn defaults() -> Self {
        Self::new(
            &TransparentConfig::default(),
            Some(&InboundConfig::default()),
            crate::config::AdminConfig::default().listen.port(),
        )
    }

    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// `iptables-restore --noflush` input for one family.
    pub fn rules(&self, family: Family) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        if self.inbound_port.is_some() {
            out.push_str("-A PREROUTING -p tcp -j REMORA_INBOUND\n");
        }
        out.push_str("-A OUTPUT -p tcp -j REMORA_OUTPUT\n");
        if let Some(inbound_port) = self.inbound_port {
            for port in std::iter::once(&self.admin_port).chain(&self.exclude_inbound_ports) {
                let _ = writeln!(out, "-A REMORA_INBOUND -p tcp --dport {port} -j RETURN");
            }
            out.push_str("-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT\n");
            let _ = writeln!(
                out,
                "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports {inbound_port}"
            );
        }
        for uid in std::iter::once(&self.proxy_uid).chain(&self.exclude_uids) {
            let _ = writeln!(out, "-A REMORA_OUTPUT -m owner --uid-owner {uid} -j RETURN");
        }
        out.push_str("-A REMORA_OUTPUT -o lo -j RETURN\n");
        for cidr in (self.exclude_outbound_cidrs.iter()).filter(|cidr| family.holds(cidr)) {
            let _ = writeln!(out, "-A REMORA_OUTPUT -d {cidr} -j RETURN");
        }
        for port in &self.exclude_outbound_ports {
            let _ = writeln!(out, "-A REMORA_OUTPUT -p tcp --dport {port} -j RETURN");
        }
        out.push_str("-A REMORA_OUTPUT -p tcp -j REMORA_REDIRECT\n");
        let _ = writeln!(
            out,
            "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        );
        out.push_str("COMMIT\n");
        out
    }

    /// What `remora iptables` prints: each family's rules after a comment
    /// naming the command that loads them.
    pub fn render(&self) -> String {
        self.families()
            .into_iter()
            .map(|family| {
                format!(
                    "# {} --noflush\n{}",
                    family.restore_tool(),
                    self.rules(family)
                )
            })
            .collect()
    }
}

/// Why changing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {tool}: {source} (is the iptables package installed?)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "{tool}: chain {chain} is still there after cleanup (is it used by a rule remora did not add?)"
    )]
    Leftover { tool: &'static str, chain: String },
}

/// Replaces any earlier remora rules with `rules`.
pub fn apply(rules: &RuleSet) -> Result<(), IptablesError> {
    for family in rules.families() {
        cleanup(family)?;
        let tool = family.restore_tool();
        let mut child = Command::new(tool)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IptablesError::Spawn { tool, source })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.rules(family).as_bytes())
                .map_err(|source| IptablesError::Spawn { tool, source })?;
        }
        let output = child
            .wait_with_output()
            .map_err(|source| IptablesError::Spawn { tool, source })?;
        check(tool, output)?;
    }
    Ok(())
}

/// Removes every `REMORA_*` jump and chain of `family`; nothing to remove is
/// fine.
pub fn cleanup(family: Family) -> Result<(), IptablesError> {
    for (builtin, chain) in JUMPS {
        for _ in 0..MAX_JUMP_COPIES {
            let removed = iptables(family, &["-D", builtin, "-p", "tcp", "-j", chain])?;
            if !removed.status.success() {
                break;
            }
        }
    }
    for flag in ["-F", "-X"] {
        for chain in CHAINS {
            // Fails when the chain does not exist: that is the goal.
            iptables(family, &[flag, chain])?;
        }
    }
    let listing = iptables(family, &["-S"])?;
    let listing = check(family.tool(), listing)?;
    match CHAINS.iter().find(|chain| listing.contains(*chain)) {
        Some(chain) => Err(IptablesError::Leftover {
            tool: family.tool(),
            chain: (*chain).to_owned(),
        }),
        None => Ok(()),
    }
}

/// Runs `iptables -w -t nat ARGS` (or ip6tables) and returns its output.
fn iptables(family: Family, args: &[&str]) -> Result<std::process::Output, IptablesError> {
    let tool = family.tool();
    Command::new(tool)
        .args(["-w", "-t", "nat"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IptablesError::Spawn { tool, source })
}

/// The stdout of a command that succeeded.
fn check(tool: &'static str, output: std::process::Output) -> Result<String, IptablesError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(IptablesError::Failed {
            tool,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules() {
        assert_eq!(
            RuleSet::defaults().render(),
            "# iptables-restore --noflush
*nat
:REMORA_INBOUND - [0:0]
:REMORA_IN_REDIRECT - [0:0]
:REMORA_OUTPUT - [0:0]
:REMORA_REDIRECT - [0:0]
-A PREROUTING -p tcp -j REMORA_INBOUND
-A OUTPUT -p tcp -j REMORA_OUTPUT
-A REMORA_INBOUND -p tcp --dport 15000 -j RETURN
-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT
-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A REMORA_OUTPUT -o lo -j RETURN
-A REMORA_OUTPUT -p tcp -j REMORA_REDIRECT
-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"
        );
    }

    #[test]
    fn exclusions_split_by_family() {
        let mut rules = RuleSet::defaults();
        rules.inbound_port = None;
        rules.exclude_uids = vec![0];
        rules.exclude_outbound_ports = vec![5432];
        rules.exclude_outbound_cidrs =
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        rules.exclude_inbound_ports = vec![22];
        rules.ipv6 = true;
        let v6 = rules.rules(Family::V6);
        assert!(
            v6.contains("-A REMORA_OUTPUT -d fd00::/8 -j RETURN\n"),
            "{v6}"
        );
        assert!(!v6.contains("10.0.0.0/8"), "{v6}");
        let v4 = rules.rules(Family::V4);
        assert!(
            v4.contains("-A REMORA_OUTPUT -d 10.0.0.0/8 -j RETURN\n"),
            "{v4}"
        );
        assert!(v4.contains("-A REMORA_OUTPUT -m owner --uid-owner 0 -j RETURN\n"));
        assert!(v4.contains("-A REMORA_OUTPUT -p tcp --dport 5432 -j RETURN\n"));
        // No inbound section: no inbound redirection at all.
        assert!(!v4.contains("PREROUTING"), "{v4}");
        assert!(!v4.contains("--dport 22"), "{v4}");
        assert!(rules.render().contains("# ip6tables-restore --noflush\n"));
    }
}
