//! The tenant's workload: a Deployment on the tenant's nodes, running as the tenant's identity
//! under the restricted Pod Security Standard.
//!
//! May touch: nothing; pure builders.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;
use crate::{KubeObject, WorkloadTemplate};

/// UID the workload runs as when its image names none: the distroless `nonroot` user, so that
/// `runAsNonRoot` holds for images built without a `USER`.
const WORKLOAD_UID: i64 = 65532;

/// The tenant's workload: a Deployment running as the tenant's service account on the tenant's
/// own nodes (nodeSelector + toleration of the pool's taint), with the Pod Security `restricted`
/// security context.
pub fn workload(
    namespace: &str,
    tenant_id: &str,
    service_account: &str,
    template: &WorkloadTemplate,
    replicas: u32,
) -> KubeObject {
    let mut selector = BTreeMap::new();
    selector.insert("app.kubernetes.io/name".to_string(), WORKLOAD_NAME.into());
    selector.insert(TENANT_LABEL.to_string(), tenant_id.into());

    let mut pod_labels = selector.clone();
    pod_labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    pod_labels.insert(WORKLOAD_IDENTITY_USE_LABEL.into(), "true".into());

    let mut deployment_labels = tenant_labels(tenant_id);
    deployment_labels.insert("app.kubernetes.io/name".into(), WORKLOAD_NAME.into());

    let resources = quantities(&[("cpu", &template.cpu), ("memory", &template.memory)]);
    let container = Container {
        name: WORKLOAD_NAME.into(),
        image: Some(template.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(template.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        // The root filesystem is read-only; most programs still want a scratch directory.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    let mut node_selector = BTreeMap::new();
    node_selector.insert(TENANT_LABEL.to_string(), tenant_id.to_string());

    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(WORKLOAD_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(deployment_labels),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account.into()),
                    automount_service_account_token: Some(false),
                    node_selector: Some(node_selector),
                    tolerations: Some(vec![Toleration {
                        key: Some(TENANT_LABEL.into()),
                        operator: Some("Equal".into()),
                        value: Some(tenant_id.into()),
                        effect: Some("NoSchedule".into()),
                        ..Toleration::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKLOAD_UID),
                        run_as_group: Some(WORKLOAD_UID),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    to_object(&deployment, Some(namespace), WORKLOAD_NAME)
}
