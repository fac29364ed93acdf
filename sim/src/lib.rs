//! Loopback simulators of Azure Resource Manager ([`arm`]) and the Kubernetes API ([`k8s`]).
//!
//! They are servers at other endpoints, never branches in production code: the worker's real ARM
//! and Kubernetes clients talk to them over HTTP. Both share latency and fault injection
//! ([`faults`]) and expose `GET /_sim/inventory` and `POST /_sim/faults` for tests. The ARM
//! simulator enforces the platform's limits by default ([`arm::ArmBehaviour`]) and can register
//! the nodes of its agent pools in a real Kubernetes API server ([`arm::KubeNodeSink`]).

pub mod arm;
pub mod faults;
pub mod k8s;

use std::net::SocketAddr;
use std::sync::Arc;

use faults::{FaultPlan, LatencyProfile};

/// How a simulator behaves.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    pub latency: LatencyProfile,
    pub faults: FaultPlan,
    /// ARM write budget: bucket size and refill per second (`None`: unlimited).
    pub arm_write_bucket: Option<(u32, f64)>,
    /// The official Azure REST specs the ARM simulator validates request bodies against
    /// (`None`: `shared/azure-rest-specs` beside the workspace).
    pub specs_dir: Option<std::path::PathBuf>,
    /// The platform limits the ARM simulator enforces (default: all on, realistic values; see
    /// [`arm::ArmBehaviour`]).
    pub arm_behaviour: arm::ArmBehaviour,
    /// A Kubernetes API server in which the ARM simulator registers a Node for every agent-pool
    /// instance (`None`: agent pools are ARM resources only).
    pub kube_nodes: Option<arm::KubeNodeSink>,
}

/// Both simulators running on loopback; dropped or `shutdown`, they stop.
#[derive(Debug)]
pub struct Running {
    pub arm_addr: SocketAddr,
    pub kube_addr: SocketAddr,
    pub arm: Arc<arm::ArmSim>,
    pub kube: Arc<k8s::KubeSim>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn arm_url(&self) -> String {
        format!("http://{}", self.arm_addr)
    }
    pub fn kube_url(&self) -> String {
        format!("http://{}", self.kube_addr)
    }
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start both simulators on the given loopback addresses (port 0: any free port).
pub async fn start(
    arm_addr: SocketAddr,
    kube_addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<Running> {
    let arm = Arc::new(arm::ArmSim::new(&options));
    let kube = Arc::new(k8s::KubeSim::new(&options));
    let arm_listener = tokio::net::TcpListener::bind(arm_addr).await?;
    let kube_listener = tokio::net::TcpListener::bind(kube_addr).await?;
    let arm_addr = arm_listener.local_addr()?;
    let kube_addr = kube_listener.local_addr()?;
    let arm_router = arm::router(arm.clone(), arm_addr);
    let kube_router = k8s::router(kube.clone());
    let mut tasks = vec![
        tokio::spawn(async move {
            if let Err(e) = axum::serve(arm_listener, arm_router).await {
                tracing::error!(error = %e, "ARM simulator stopped");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = axum::serve(kube_listener, kube_router).await {
                tracing::error!(error = %e, "Kubernetes simulator stopped");
            }
        }),
    ];
    if arm.registers_nodes() {
        tasks.push(tokio::spawn(arm::run_node_sink(arm.clone())));
    }
    Ok(Running {
        arm_addr,
        kube_addr,
        arm,
        kube,
        tasks,
    })
}
