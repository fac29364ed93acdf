//! `kube-worker-identity OUT`: on the cluster `$KUBECONFIG` names (the admin's, as
//! `scripts/kube.sh env` prints it), apply the worker's own identity from `k8s/base/` (namespace,
//! ServiceAccount, RBAC), issue the worker's ServiceAccount a token, and write a kubeconfig that
//! authenticates as it to OUT. `scripts/local-run.sh` starts the worker with it, so the worker is
//! authorized by exactly the RBAC we ship. Reads `ONBOARD_KUBE_SERVER`, `ONBOARD_KUBE_CA`,
//! `KUBECONFIG`.

use std::path::PathBuf;
use std::process::ExitCode;

use onboarding_testkit::real_cluster::RealCluster;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: kube-worker-identity OUT (after eval \"$(scripts/kube.sh env)\")");
        return ExitCode::from(2);
    };
    let (Ok(server), Ok(ca)) = (
        std::env::var("ONBOARD_KUBE_SERVER"),
        std::env::var("ONBOARD_KUBE_CA"),
    ) else {
        eprintln!(
            "kube-worker-identity: ONBOARD_KUBE_SERVER and ONBOARD_KUBE_CA are not set; run eval \"$(scripts/kube.sh env)\" first"
        );
        return ExitCode::from(2);
    };
    match RealCluster::write_worker_kubeconfig(&server, ca.as_ref(), &out).await {
        Ok(()) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "kube-worker-identity: cannot reach the cluster $KUBECONFIG names ({e}); is it running (scripts/kube.sh status)?"
            );
            ExitCode::FAILURE
        }
    }
}
