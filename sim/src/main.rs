//! `sim`: runs the ARM, Entra ID and Kubernetes API simulators on loopback until interrupted.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use sim::SimOptions;
use sim::arm::{ArmBehaviour, KubeAuth, KubeNodeSink, VmSize};
use sim::entra::{AppRegistration, EntraOptions};
use sim::faults::{FaultPlan, LatencyProfile};

/// Simulated Azure Resource Manager, Entra ID and Kubernetes API servers, for tests and the local
/// run.
///
/// All listen on loopback only. `GET /_sim/inventory` lists what exists; `POST /_sim/faults`
/// (JSON FaultPlan) changes fault injection while running.
///
/// The ARM simulator enforces the platform's limits by default: one agent-pool operation per
/// cluster at a time (409 OperationNotAllowed), blob containers that stay "being deleted" after a
/// DELETE (409 on re-creation), a list of VM sizes (400 BadRequest for others) and a regional
/// vCPU quota per subscription (400 ErrCode_InsufficientVCPUQuota). A cluster-level operation
/// (an upgrade, say) that blocks pool operations for a while is started with
/// `POST /_sim/cluster-operation` on the ARM address, body
/// `{"clusterId": "/subscriptions/…/managedClusters/aks", "seconds": 60, "operation": "Upgrading"}`
/// (or `"subscription"`, `"resourceGroup"`, `"cluster"` instead of `"clusterId"`; seconds are
/// wall-clock, not scaled).
///
/// With --kube-server, every agent pool that has finished creating or scaling becomes Node
/// objects in that Kubernetes API server (names like aks-<pool>-<8 digits>-vmss000000, the pool's
/// labels and taints, capacity from the VM size, Ready), deleted again with the pool; failures
/// are logged and shown under `kubeNodes` in `GET /_sim/inventory`.
///
/// The Entra ID simulator starts too (unless --no-entra): an HTTPS token endpoint,
/// POST /{tenant}/oauth2/v2.0/token, with a certificate from a test CA made at start (write its
/// PEM with --entra-ca-out and make the client trust it). It exchanges workload identity
/// assertions (client credentials, client_assertion = a Kubernetes service-account token) for
/// access tokens, matching issuer, subject and audience against the federated credentials of the
/// ARM simulator's user-assigned identities and of --entra-app registrations; assertion
/// signatures are not verified. Refusals are Entra's: AADSTS70021 (no matching federated
/// identity record), AADSTS700024 (assertion expired), AADSTS700016 (unknown client id). For
/// tests: GET /_sim/entra/requests (the token requests, never the tokens),
/// POST /_sim/entra/faults {"unavailableForSecs": 5, "status": 503}, POST /_sim/entra/apps
/// {"clientId", "issuer", "subject"}, POST /_sim/entra/reset. With --arm-require-tokens, ARM
/// requests without a valid token from it get ARM's 401s (AuthenticationFailed,
/// InvalidAuthenticationToken, ExpiredAuthenticationToken).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the ARM simulator.
    #[arg(long, default_value = "127.0.0.1:8780")]
    arm_addr: SocketAddr,
    /// Address of the Kubernetes API simulator.
    #[arg(long, default_value = "127.0.0.1:8781")]
    kube_addr: SocketAddr,
    /// Latency: `zero`, or `realistic` (real durations: node pools minutes, identities seconds)
    /// multiplied by --latency-scale.
    #[arg(long, default_value = "zero", value_parser = ["zero", "realistic"])]
    latency: String,
    /// Scale of the realistic profile: 0.01 makes a 4-minute node pool take 2.4 s.
    #[arg(long, default_value_t = 0.01)]
    latency_scale: f64,
    /// Share of requests (0.0-1.0) that fail transiently: 429 with Retry-After, 500, 503, stalls.
    #[arg(long, default_value_t = 0.0)]
    transient_rate: f64,
    /// Operations (name fragments, e.g. `agent_pools.put`) that fail permanently. Repeatable.
    #[arg(long = "fail-op")]
    fail_ops: Vec<String>,
    /// ARM write budget: bucket size, refilled at --arm-write-refill per second (ARM's throttling).
    #[arg(long)]
    arm_write_bucket: Option<u32>,
    #[arg(long, default_value_t = 10.0)]
    arm_write_refill: f64,
    /// Seed for reproducible fault injection.
    #[arg(long)]
    seed: Option<u64>,
    /// Let agent-pool operations on one cluster overlap (AKS runs one at a time and answers 409
    /// OperationNotAllowed to the others; so does the simulator unless this is given).
    #[arg(long)]
    concurrent_pool_operations: bool,
    /// Real-world seconds a deleted blob container stays "being deleted" (a PUT of its name gets
    /// 409 meanwhile), multiplied by --latency-scale under `--latency realistic`; with
    /// `--latency zero` containers go at once. 0 turns it off.
    #[arg(long, default_value_t = sim::arm::DEFAULT_CONTAINER_DELETION_SECS)]
    container_deletion_secs: f64,
    /// Regional vCPU quota per subscription: agent pools (VM size's vCPUs × count, × maxCount
    /// when autoscaling) beyond it are refused with 400 ErrCode_InsufficientVCPUQuota.
    #[arg(long, default_value_t = sim::arm::DEFAULT_VCPU_QUOTA)]
    vcpu_quota: u32,
    /// No vCPU quota at all.
    #[arg(long, conflicts_with = "vcpu_quota")]
    unlimited_vcpu_quota: bool,
    /// Accept any VM size. By default agent pools must use one of a list of common sizes
    /// (Standard_B2s, B2ms, B4ms, DS2_v2-DS4_v2, D2s_v3-D8s_v3, D2s_v5-D32s_v5, D2ds_v5,
    /// D4ds_v5, D2as_v5-D8as_v5, E2s_v5-E16s_v5, F2s_v2-F16s_v2; names are case-insensitive)
    /// and get 400 BadRequest otherwise; sizes under 2 vCPUs (DS1_v2) are refused as AKS does.
    #[arg(long, conflicts_with = "vm_sizes")]
    any_vm_size: bool,
    /// Add a VM size to the list: NAME:VCPUS:MEMORY_GIB, e.g. Standard_D4s_v6:4:16. Repeatable.
    #[arg(long = "vm-size", value_parser = parse_vm_size)]
    vm_sizes: Vec<VmSize>,
    /// Kubernetes API server in which agent pools become Node objects, e.g.
    /// https://127.0.0.1:6443 (a real one; the Kubernetes simulator of --kube-addr serves no
    /// nodes).
    #[arg(long)]
    kube_server: Option<String>,
    /// PEM file of the CA of --kube-server's certificate (default: the system's roots).
    #[arg(long, requires = "kube_server")]
    kube_ca: Option<std::path::PathBuf>,
    /// File holding a bearer token for --kube-server (read again each round).
    #[arg(long, requires = "kube_server", conflicts_with = "kube_client_cert")]
    kube_token_file: Option<std::path::PathBuf>,
    /// PEM client certificate for --kube-server (with --kube-client-key).
    #[arg(long, requires_all = ["kube_server", "kube_client_key"])]
    kube_client_cert: Option<std::path::PathBuf>,
    /// PEM key of --kube-client-cert.
    #[arg(long, requires = "kube_client_cert")]
    kube_client_key: Option<std::path::PathBuf>,
    /// Address of the Entra ID simulator (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8782")]
    entra_addr: SocketAddr,
    /// Do not start the Entra ID simulator.
    #[arg(long, conflicts_with_all = ["entra_ca_out", "entra_apps", "arm_require_tokens"])]
    no_entra: bool,
    /// Write the PEM of the Entra simulator's test CA to this file (trust it to reach Entra).
    #[arg(long)]
    entra_ca_out: Option<std::path::PathBuf>,
    /// An application with a federated credential: CLIENT_ID=ISSUER|SUBJECT (any tenant,
    /// audience api://AzureADTokenExchange, propagated from the start). Repeatable.
    #[arg(long = "entra-app", value_parser = parse_entra_app)]
    entra_apps: Vec<AppRegistration>,
    /// Seconds a new or changed federated credential stays unmatched (AADSTS70021), like Entra's
    /// propagation (seconds to a minute or two in Azure).
    #[arg(long, default_value_t = 0.0)]
    entra_propagation_secs: f64,
    /// Lifetime of the access tokens the Entra simulator issues (expires_in).
    #[arg(long, default_value_t = sim::entra::DEFAULT_TOKEN_LIFETIME.as_secs())]
    entra_token_lifetime_secs: u64,
    /// ARM requests need an access token from the Entra simulator for ARM's audience
    /// (401 AuthenticationFailed / InvalidAuthenticationToken / ExpiredAuthenticationToken
    /// otherwise); /_sim/ endpoints stay open.
    #[arg(long)]
    arm_require_tokens: bool,
}

fn parse_entra_app(s: &str) -> Result<AppRegistration, String> {
    s.parse()
}

fn parse_vm_size(s: &str) -> Result<VmSize, String> {
    let mut parts = s.split(':');
    let (Some(name), Some(vcpus), Some(memory), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("'{s}' is not NAME:VCPUS:MEMORY_GIB"));
    };
    let vcpus: u32 = vcpus.parse().map_err(|e| format!("vCPUs '{vcpus}': {e}"))?;
    let gib: f64 = memory
        .parse()
        .map_err(|e| format!("memory '{memory}' GiB: {e}"))?;
    if name.is_empty() || vcpus == 0 || !gib.is_finite() || gib <= 0.0 {
        return Err(format!("'{s}': a name, at least 1 vCPU and some memory"));
    }
    Ok(VmSize::new(name, vcpus, (gib * 1024.0).round() as u64))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    for addr in [args.arm_addr, args.kube_addr, args.entra_addr] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the simulators only listen on loopback; {addr} is not a loopback address"
        );
    }
    let latency = match args.latency.as_str() {
        "realistic" => LatencyProfile::realistic(args.latency_scale),
        _ => LatencyProfile::zero(),
    };
    anyhow::ensure!(
        args.entra_propagation_secs.is_finite() && args.entra_propagation_secs >= 0.0,
        "--entra-propagation-secs must be a number of seconds, at least 0"
    );
    let entra = (!args.no_entra).then(|| EntraOptions {
        addr: args.entra_addr,
        apps: args.entra_apps,
        propagation: std::time::Duration::from_secs_f64(args.entra_propagation_secs),
        token_lifetime: std::time::Duration::from_secs(args.entra_token_lifetime_secs),
    });
    let options = SimOptions {
        latency,
        faults: FaultPlan {
            transient_rate: args.transient_rate,
            fail_ops: args.fail_ops,
            retry_after_secs: 1,
            stall_ms: 2_000,
            seed: args.seed,
            ..FaultPlan::default()
        },
        arm_write_bucket: args.arm_write_bucket.map(|b| (b, args.arm_write_refill)),
        arm_behaviour: ArmBehaviour {
            one_pool_operation_per_cluster: !args.concurrent_pool_operations,
            container_deletion_secs: args.container_deletion_secs.max(0.0),
            vm_sizes: (!args.any_vm_size).then(|| {
                let mut sizes = VmSize::common();
                sizes.extend(args.vm_sizes);
                sizes
            }),
            vcpu_quota: (!args.unlimited_vcpu_quota).then_some(args.vcpu_quota),
        },
        kube_nodes: args.kube_server.map(|server| KubeNodeSink {
            server,
            ca_pem: args.kube_ca,
            auth: match (
                args.kube_token_file,
                args.kube_client_cert,
                args.kube_client_key,
            ) {
                (Some(token), _, _) => KubeAuth::TokenFile(token),
                (None, Some(cert_pem), Some(key_pem)) => KubeAuth::ClientCert { cert_pem, key_pem },
                _ => KubeAuth::None,
            },
        }),
        entra,
        arm_require_tokens: args.arm_require_tokens,
        ..SimOptions::default()
    };
    let running = sim::start(args.arm_addr, args.kube_addr, options)
        .await
        .context("starting the simulators (is another `sim` already running on these ports?)")?;
    if let (Some(path), Some(pem)) = (&args.entra_ca_out, running.entra_ca_pem()) {
        std::fs::write(path, pem)
            .with_context(|| format!("writing the Entra CA to {}", path.display()))?;
    }
    let entra = running
        .entra_url()
        .map(|url| format!("  |  simulated Entra ID on {url}"))
        .unwrap_or_default();
    println!(
        "simulated Azure Resource Manager on {}  |  simulated Kubernetes API on {}{entra}",
        running.arm_url(),
        running.kube_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.shutdown();
    Ok(())
}
