//! `sim`: runs the ARM and Kubernetes API simulators on loopback until interrupted.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use sim::SimOptions;
use sim::faults::{FaultPlan, LatencyProfile};

/// Simulated Azure Resource Manager and Kubernetes API servers, for tests and the local run.
///
/// Both listen on loopback only. `GET /_sim/inventory` lists what exists; `POST /_sim/faults`
/// (JSON FaultPlan) changes fault injection while running.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    for addr in [args.arm_addr, args.kube_addr] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the simulators only listen on loopback; {addr} is not a loopback address"
        );
    }
    let latency = match args.latency.as_str() {
        "realistic" => LatencyProfile::realistic(args.latency_scale),
        _ => LatencyProfile::zero(),
    };
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
        ..SimOptions::default()
    };
    let running = sim::start(args.arm_addr, args.kube_addr, options)
        .await
        .context("starting the simulators (is another `sim` already running on these ports?)")?;
    println!(
        "simulated Azure Resource Manager on {}  |  simulated Kubernetes API on {}",
        running.arm_url(),
        running.kube_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.shutdown();
    Ok(())
}
