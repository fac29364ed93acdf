//! Loopback simulators of Azure Resource Manager ([`arm`]), Entra ID's token endpoint
//! ([`entra`]) and the Kubernetes API ([`k8s`]).
//!
//! They are servers at other endpoints, never branches in production code: the worker's real ARM,
//! credential and Kubernetes clients talk to them over HTTP(S). ARM and Kubernetes share latency
//! and fault injection ([`faults`]) and expose `GET /_sim/inventory` and `POST /_sim/faults` for
//! tests. The ARM simulator enforces the platform's limits by default ([`arm::ArmBehaviour`]) and
//! can register the nodes of its agent pools in a real Kubernetes API server
//! ([`arm::KubeNodeSink`]).
//!
//! The Entra simulator is optional ([`SimOptions::entra`]): an HTTPS token endpoint with a test CA
//! ([`Running::entra_ca_pem`]) that exchanges workload identity assertions for access tokens,
//! honouring the ARM simulator's identities and federated credentials. With
//! [`SimOptions::arm_require_tokens`], ARM requests need one of its tokens.

pub mod arm;
pub mod entra;
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
    /// Run the Entra ID simulator (HTTPS) beside the others (`None`: no Entra).
    pub entra: Option<entra::EntraOptions>,
    /// ARM requests need a bearer token from the Entra simulator, for ARM's audience (401s like
    /// ARM's otherwise); needs `entra`. Off by default.
    pub arm_require_tokens: bool,
}

/// The simulators running on loopback; dropped or `shutdown`, they stop.
#[derive(Debug)]
pub struct Running {
    pub arm_addr: SocketAddr,
    pub kube_addr: SocketAddr,
    pub arm: Arc<arm::ArmSim>,
    pub kube: Arc<k8s::KubeSim>,
    /// The Entra simulator, when `SimOptions::entra` asked for one.
    pub entra: Option<Arc<entra::EntraSim>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `https://127.0.0.1:PORT`, the authority host for `azure_identity`.
    pub fn entra_url(&self) -> Option<String> {
        self.entra.as_ref().map(|e| e.url().to_string())
    }
    /// PEM of the CA of the Entra simulator's certificate: what its clients must trust.
    pub fn entra_ca_pem(&self) -> Option<String> {
        self.entra.as_ref().map(|e| e.ca_pem().to_string())
    }
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

/// Start the simulators on the given loopback addresses (port 0: any free port); the Entra
/// simulator's address is in `options.entra`.
pub async fn start(
    arm_addr: SocketAddr,
    kube_addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<Running> {
    if options.arm_require_tokens && options.entra.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "arm_require_tokens needs the Entra simulator (SimOptions::entra) to issue the tokens",
        ));
    }
    let arm = Arc::new(arm::ArmSim::new(&options));
    let kube = Arc::new(k8s::KubeSim::new(&options));
    let arm_listener = tokio::net::TcpListener::bind(arm_addr).await?;
    let kube_listener = tokio::net::TcpListener::bind(kube_addr).await?;
    let arm_addr = arm_listener.local_addr()?;
    let kube_addr = kube_listener.local_addr()?;
    // Entra starts before the other servers are spawned, so its failing leaves nothing running.
    let (entra, entra_task) = match &options.entra {
        Some(entra_options) => {
            let (entra, task) = entra::start(entra_options, Some(arm.clone())).await?;
            if options.arm_require_tokens {
                arm.require_tokens(Some(entra.verifier()));
            }
            (Some(entra), Some(task))
        }
        None => (None, None),
    };
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
    tasks.extend(entra_task);
    if arm.registers_nodes() {
        tasks.push(tokio::spawn(arm::run_node_sink(arm.clone())));
    }
    Ok(Running {
        arm_addr,
        kube_addr,
        arm,
        kube,
        entra,
        tasks,
    })
}
