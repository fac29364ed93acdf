//! Validation of a whole configuration: every problem at once, each naming the setting, so an
//! operator fixes a file in one pass. Section checks live with their sections; this module
//! checks what spans sections (the default target, the saga budget against the lock duration)
//! and the guard rails' egress rules (whose types live in `onboarding_providers`). Warnings are
//! settings that are valid but leave tenants with something that does not work.
//!
//! May touch: nothing; pure validation.

use std::net::IpAddr;

use crate::{Config, ConfigError, EgressRule, TransportConfig, targets};

impl Config {
    /// Every problem at once, each naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.targets.contains_key(&self.default_target) {
            problems.push(format!(
                "default_target {:?} is not one of the configured targets ({})",
                self.default_target,
                self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, t) in &self.targets {
            problems.extend(targets::problems(name, t));
        }
        let s = &self.saga;
        if s.message_budget_ms == 0 {
            problems.push("saga.message_budget_ms must be above 0".into());
        }
        if let TransportConfig::Embedded {
            lock_duration_secs, ..
        } = &self.transport
            && s.message_budget_ms >= lock_duration_secs.saturating_mul(1000)
        {
            problems.push(format!(
                "saga.message_budget_ms ({}) must be shorter than transport.lock_duration_secs ({}s)",
                s.message_budget_ms, lock_duration_secs
            ));
        }
        problems.extend(self.transport.problems());
        problems.extend(range_problems(self));
        problems.extend(self.journal.problems());
        problems.extend(self.arm.problems());
        for (i, rule) in self.guardrails.egress.iter().enumerate() {
            problems.extend(egress_problems(&format!("guardrails.egress[{i}]"), rule));
        }
        if let Some(fqdn) = &self.guardrails.fqdn_egress {
            problems.extend(fqdn_problems("guardrails.fqdn_egress", fqdn));
        }
        if self.telemetry.service_name.trim().is_empty() {
            problems.push(
                "telemetry.service_name is empty (it names the worker in traces and metrics)"
                    .into(),
            );
        }
        if self.health.port != 0 && self.health.address.parse::<std::net::IpAddr>().is_err() {
            problems.push(format!(
                "health.address {:?} is not an IP address (0.0.0.0 listens on every interface, 127.0.0.1 on loopback only)",
                self.health.address
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl Config {
    /// Settings that load but leave tenants with something that does not work, one sentence
    /// each naming the setting: `worker config check` prints them on stderr.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.guardrails.egress.is_empty() && self.guardrails.fqdn_egress.is_none() {
            warnings.push(
                "guardrails.egress is empty: the tenant namespaces' default-deny network policy \
                 leaves their pods DNS and their own namespace only, so they cannot reach Entra \
                 (login.microsoftonline.com, the workload identity token exchange) or their \
                 storage account (<account>.blob.core.windows.net): the identity and the blob \
                 container onboarding creates are unusable from the tenant's pods. Add \
                 [[guardrails.egress]] rules with the CIDRs of the AzureActiveDirectory and \
                 Storage.<region> service tags (TCP 443)."
                    .into(),
            );
        }
        warnings
    }
}

/// Numbers outside what makes sense, each naming the setting and its range: 0 where something
/// must happen, and values so large they are surely a typo (a budget of days).
fn range_problems(c: &Config) -> Vec<String> {
    let s = &c.saga;
    let checks: [(&str, u64, u64, u64); 9] = [
        ("worker.concurrency", c.worker.concurrency as u64, 1, 10_000),
        ("saga.message_budget_ms", s.message_budget_ms, 1, 3_600_000),
        (
            "saga.step_retry_budget_ms",
            s.step_retry_budget_ms,
            0,
            600_000,
        ),
        (
            "saga.step_attempt_limit",
            u64::from(s.step_attempt_limit),
            1,
            1_000,
        ),
        (
            "saga.compensation_attempt_limit",
            u64::from(s.compensation_attempt_limit),
            1,
            1_000,
        ),
        (
            "saga.remembered_requests",
            s.remembered_requests as u64,
            1,
            10_000,
        ),
        (
            "saga.cluster_turn_poll_ms",
            s.cluster_turn_poll_ms,
            1,
            3_600_000,
        ),
        (
            "saga.cluster_turn_lease_ms",
            s.cluster_turn_lease_ms,
            1_000,
            86_400_000,
        ),
        ("saga.wait_limit_ms", s.wait_limit_ms, 1_000, 7 * 86_400_000),
    ];
    checks
        .iter()
        .filter(|(_, v, lo, hi)| v < lo || v > hi)
        .map(|(field, v, lo, hi)| format!("{field} is {v}; it must be {lo} to {hi}"))
        .collect()
}

/// Every problem with one `[[guardrails.egress]]` rule, each naming the setting. A rule without
/// destinations or ports would allow every destination or every port (that is what an empty
/// `to` or `ports` means in a NetworkPolicy), so both are refused.
fn egress_problems(field: &str, rule: &EgressRule) -> Vec<String> {
    let mut problems = Vec::new();
    if rule.name.trim().is_empty() {
        problems.push(format!(
            "{field}.name is empty (say what the rule is for: entra, storage)"
        ));
    }
    if rule.cidrs.is_empty() {
        problems.push(format!(
            "{field}.cidrs is empty: give the destination CIDRs (on AKS the service tag's address prefixes)"
        ));
    }
    for (i, cidr) in rule.cidrs.iter().enumerate() {
        if let Err(why) = check_cidr(cidr) {
            problems.push(format!("{field}.cidrs[{i}] {cidr:?} {why}"));
        }
    }
    if rule.ports.is_empty() {
        problems.push(format!(
            "{field}.ports is empty: give the destination TCP ports (443 when left out)"
        ));
    }
    for (i, port) in rule.ports.iter().enumerate() {
        if *port == 0 {
            problems.push(format!("{field}.ports[{i}] is 0: a port is 1 to 65535"));
        }
    }
    problems
}

/// Every problem with `[guardrails.fqdn_egress]`: exact host names only (a wildcard storage
/// name would reach every account), and real ports.
fn fqdn_problems(field: &str, fqdn: &onboarding_providers::FqdnEgress) -> Vec<String> {
    let mut problems = Vec::new();
    if fqdn.names.is_empty() {
        problems.push(format!(
            "{field}.names is empty: give the host names (login.microsoftonline.com, {{storage_account}}.blob.core.windows.net)"
        ));
    }
    for (i, name) in fqdn.names.iter().enumerate() {
        let host = name.replace("{storage_account}", "account");
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.len() > 253 || host.split('.').count() < 2 || !host.split('.').all(label_ok) {
            problems.push(format!(
                "{field}.names[{i}] {name:?} is not an exact host name (letters, digits, hyphens and dots; no wildcards)"
            ));
        }
    }
    if fqdn.ports.is_empty() {
        problems.push(format!("{field}.ports is empty (443 when left out)"));
    }
    for (i, port) in fqdn.ports.iter().enumerate() {
        if *port == 0 {
            problems.push(format!("{field}.ports[{i}] is 0: a port is 1 to 65535"));
        }
    }
    problems
}

/// `address/prefix` with the host bits zero, as the service tags list them; not `/0`, which
/// would undo the namespace's default deny for the rule's ports.
fn check_cidr(cidr: &str) -> Result<(), String> {
    let not_cidr = || "is not a CIDR (address/prefix, e.g. 20.190.128.0/18)".to_string();
    let (address, prefix) = cidr.split_once('/').ok_or_else(not_cidr)?;
    let address: IpAddr = address.parse().map_err(|_| not_cidr())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_cidr());
    }
    let prefix: u32 = prefix.parse().map_err(|_| not_cidr())?;
    let (bits, value) = match address {
        IpAddr::V4(a) => (32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128, u128::from(a)),
    };
    if prefix > bits {
        return Err(format!("has a prefix longer than {bits} bits"));
    }
    if prefix == 0 {
        return Err("allows every address: it would undo the namespace's default deny".into());
    }
    let host_bits = bits - prefix;
    let host_mask = if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    };
    if value & host_mask != 0 {
        let network = value & !host_mask;
        let network = match address {
            // The value came from a u32, so the network fits in one.
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(network as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(network)),
        };
        return Err(format!(
            "has host bits set: the network is {network}/{prefix}"
        ));
    }
    Ok(())
}
