//! The node firewall of each security mode, as an nftables script for NanoScale's
//! own table (`inet nanoscale`): other tables and their rules are never touched.
//!
//! - Mode A: no table (NanoScale manages nothing).
//! - Mode B: inbound only to the node's open TCP ports (the proxy's, and the
//!   control plane's where it runs) and to SSH from the configured networks (from
//!   anywhere when none are configured, so a mode change never locks the operator
//!   out of SSH).
//! - Mode C: nothing inbound; traffic arrives through a tunnel the node dials.
//!
//! In B and C, loopback, established/related traffic, ICMP (path MTU discovery,
//! IPv6 neighbour discovery) and DHCP client replies are always accepted; outbound
//! traffic is never filtered. A base chain with policy drop drops a packet even when
//! another table's chain accepts it, so the mode holds whatever else is loaded.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::desired::SecurityMode;

/// The table's family and name (`nft list table inet nanoscale`).
pub const TABLE: &str = "inet nanoscale";
pub const SSH_PORT: u16 = 22;

/// What a node's firewall should let in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FirewallPlan {
    pub mode: SecurityMode,
    /// TCP ports open to everyone in mode B, sorted.
    pub open_tcp_ports: Vec<u16>,
    /// Networks SSH is open to in mode B; empty = from anywhere.
    pub ssh_from: Vec<String>,
}

/// What a node reports of its firewall (the heartbeat's "exposure").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FirewallState {
    /// The mode in force (after a revert, the one before the change).
    pub mode: SecurityMode,
    /// TCP ports reachable from outside; absent in mode A, where every port is.
    pub open_tcp_ports: Option<Vec<u16>>,
    /// Where SSH is open from in mode B (`["any"]` when from anywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_from: Vec<String>,
    /// `applied`, `confirming`, `reverted` (the change cut the node off from the
    /// control plane and was undone), `failed` (nft refused the rules) or
    /// `unavailable` (no nftables on the node, or the agent is not root).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Checks one network of `ssh_from`: an address or `address/prefix`.
pub fn parse_network(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("'{text}' is not an IP address or network (e.g. 203.0.113.0/24)"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|bits| *bits <= max)
            .ok_or_else(|| format!("'{text}': the prefix length must be 0 to {max}"))?,
        None => max,
    };
    Ok((address, prefix))
}

impl FirewallPlan {
    /// The nft script that makes the table exactly this plan, atomically
    /// (`nft -f` applies a file as one transaction): the table is declared (a
    /// no-op when it exists), deleted, and defined again.
    pub fn script(&self) -> Result<String, String> {
        let mut out = format!("table {TABLE}\ndelete table {TABLE}\n");
        if self.mode == SecurityMode::A {
            return Ok(out);
        }
        out.push_str(&format!("table {TABLE} {{\n"));
        out.push_str("\tchain input {\n");
        out.push_str("\t\ttype filter hook input priority filter; policy drop;\n");
        out.push_str("\t\tiif \"lo\" accept\n");
        out.push_str("\t\tct state established,related accept\n");
        out.push_str("\t\tct state invalid drop\n");
        out.push_str("\t\tmeta l4proto { icmp, ipv6-icmp } accept\n");
        out.push_str("\t\tudp dport { 68, 546 } accept comment \"DHCP client replies\"\n");
        if self.mode == SecurityMode::B {
            let mut ports = self.open_tcp_ports.clone();
            ports.sort_unstable();
            ports.dedup();
            ports.retain(|port| *port != 0);
            if !ports.is_empty() {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                out.push_str(&format!("\t\ttcp dport {{ {} }} accept\n", list.join(", ")));
            }
            if self.ssh_from.is_empty() {
                out.push_str(&format!("\t\ttcp dport {SSH_PORT} accept\n"));
            }
            for family in [4, 6] {
                let networks: Vec<String> = self
                    .ssh_from
                    .iter()
                    .map(|text| parse_network(text).map(|parsed| (text, parsed)))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|(_, (address, _))| address.is_ipv4() == (family == 4))
                    .map(|(_, (address, prefix))| format!("{address}/{prefix}"))
                    .collect();
                if !networks.is_empty() {
                    let selector = if family == 4 { "ip" } else { "ip6" };
                    out.push_str(&format!(
                        "\t\t{selector} saddr {{ {} }} tcp dport {SSH_PORT} accept\n",
                        networks.join(", ")
                    ));
                }
            }
        }
        out.push_str("\t}\n}\n");
        Ok(out)
    }

    /// What the plan exposes, for the heartbeat.
    pub fn state(&self, status: &str, message: Option<String>) -> FirewallState {
        let (open, ssh_from) = match self.mode {
            SecurityMode::A => (None, Vec::new()),
            SecurityMode::B => {
                let mut ports = self.open_tcp_ports.clone();
                ports.push(SSH_PORT);
                ports.sort_unstable();
                ports.dedup();
                let from = if self.ssh_from.is_empty() {
                    vec!["any".to_owned()]
                } else {
                    self.ssh_from.clone()
                };
                (Some(ports), from)
            }
            SecurityMode::C => (Some(Vec::new()), Vec::new()),
        };
        FirewallState {
            mode: self.mode,
            open_tcp_ports: open,
            ssh_from,
            status: status.to_owned(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: SecurityMode, ssh_from: &[&str]) -> FirewallPlan {
        FirewallPlan {
            mode,
            open_tcp_ports: vec![8080, 443, 80, 80],
            ssh_from: ssh_from.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn each_mode_renders_its_table() {
        expect_test::expect![[r#"
            table inet nanoscale
            delete table inet nanoscale
        "#]]
        .assert_eq(&plan(SecurityMode::A, &[]).script().unwrap());
        expect_test::expect![[r#"
            table inet nanoscale
            delete table inet nanoscale
            table inet nanoscale {
            	chain input {
            		type filter hook input priority filter; policy drop;
            		iif "lo" accept
            		ct state established,related accept
            		ct state invalid drop
            		meta l4proto { icmp, ipv6-icmp } accept
            		udp dport { 68, 546 } accept comment "DHCP client replies"
            		tcp dport { 80, 443, 8080 } accept
            		ip saddr { 203.0.113.0/24, 198.51.100.7/32 } tcp dport 22 accept
            		ip6 saddr { 2001:db8::/32 } tcp dport 22 accept
            	}
            }
        "#]]
        .assert_eq(
            &plan(
                SecurityMode::B,
                &["203.0.113.0/24", "198.51.100.7", "2001:db8::/32"],
            )
            .script()
            .unwrap(),
        );
        expect_test::expect![[r#"
            table inet nanoscale
            delete table inet nanoscale
            table inet nanoscale {
            	chain input {
            		type filter hook input priority filter; policy drop;
            		iif "lo" accept
            		ct state established,related accept
            		ct state invalid drop
            		meta l4proto { icmp, ipv6-icmp } accept
            		udp dport { 68, 546 } accept comment "DHCP client replies"
            	}
            }
        "#]]
        .assert_eq(&plan(SecurityMode::C, &["203.0.113.0/24"]).script().unwrap());
    }

    #[test]
    fn mode_b_without_networks_keeps_ssh_open_and_says_so() {
        let script = plan(SecurityMode::B, &[]).script().unwrap();
        assert!(script.contains("\t\ttcp dport 22 accept\n"), "{script}");
        let state = plan(SecurityMode::B, &[]).state("applied", None);
        assert_eq!(state.open_tcp_ports, Some(vec![22, 80, 443, 8080]));
        assert_eq!(state.ssh_from, vec!["any".to_owned()]);
        assert_eq!(
            plan(SecurityMode::A, &[])
                .state("applied", None)
                .open_tcp_ports,
            None
        );
        assert_eq!(
            plan(SecurityMode::C, &[])
                .state("applied", None)
                .open_tcp_ports,
            Some(vec![])
        );
    }

    #[test]
    fn networks_are_checked() {
        assert_eq!(
            parse_network("10.0.0.0/8"),
            Ok(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(parse_network("::1"), Ok(("::1".parse().unwrap(), 128)));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "example.com",
            "1.2.3.4/8; drop",
            "::/129",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
        assert!(plan(SecurityMode::B, &["1.2.3.4; flush ruleset"])
            .script()
            .is_err());
    }
}
