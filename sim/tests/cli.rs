//! The `sim` binary explains its options: every platform behaviour and the Kubernetes node sink
//! has a flag, and `--help` says what it does.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

use std::process::Command;

#[test]
fn help_explains_every_platform_flag_and_the_cluster_operation_endpoint() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--concurrent-pool-operations",
        "--container-deletion-secs",
        "--vcpu-quota",
        "--unlimited-vcpu-quota",
        "--any-vm-size",
        "--vm-size",
        "--kube-server",
        "--kube-ca",
        "--kube-token-file",
        "--kube-client-cert",
        "--kube-client-key",
        "POST /_sim/cluster-operation",
        "ErrCode_InsufficientVCPUQuota",
        "OperationNotAllowed",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn a_client_certificate_needs_its_key_and_a_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["--kube-client-cert", "/tmp/c.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kube-client-key") || err.contains("--kube-server"),
        "{err}"
    );
}
