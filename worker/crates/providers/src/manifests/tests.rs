//! Tests of the manifest builders: coordinates, labels, the guard rails and the workload.

use super::*;
use crate::{EgressRule, GuardrailDefaults, WorkloadTemplate};
use serde::Deserialize;
use serde_json::json;

fn spec(admin: Option<&str>) -> GuardrailSpec {
    GuardrailSpec::from_defaults(&GuardrailDefaults::default(), admin.map(str::to_string))
}

fn rule(name: &str, cidrs: &[&str], ports: &[u16]) -> EgressRule {
    EgressRule {
        name: name.into(),
        cidrs: cidrs.iter().map(|c| (*c).to_string()).collect(),
        ports: ports.to_vec(),
    }
}

/// Guard rails with Entra and storage egress configured, as `[[guardrails.egress]]` gives them.
fn spec_with_egress(admin: Option<&str>) -> GuardrailSpec {
    let defaults = GuardrailDefaults {
        egress: vec![
            rule("entra", &["20.190.128.0/18", "2603:1006:2000::/48"], &[443]),
            rule("storage", &["20.60.0.0/16"], &[443, 8443]),
        ],
        ..GuardrailDefaults::default()
    };
    GuardrailSpec::from_defaults(&defaults, admin.map(str::to_string))
}

fn find<'a>(objects: &'a [KubeObject], kind: &str, name: &str) -> Option<&'a KubeObject> {
    objects.iter().find(|o| o.kind == kind && o.name == name)
}

#[test]
fn every_manifest_carries_its_api_version_kind_and_coordinates() {
    let mut objects = vec![
        namespace("tenant-acme", "acme"),
        service_account("tenant-acme", "acme", "acme", "cid", None),
        workload(
            "tenant-acme",
            "acme",
            "acme",
            &WorkloadTemplate::default(),
            2,
        ),
    ];
    objects.extend(guardrails(
        "tenant-acme",
        "acme",
        &spec_with_egress(Some("g")),
    ));
    for o in &objects {
        assert_eq!(o.manifest["apiVersion"], json!(o.api_version), "{o:?}");
        assert_eq!(o.manifest["kind"], json!(o.kind), "{o:?}");
        assert_eq!(o.manifest["metadata"]["name"], json!(o.name), "{o:?}");
        assert_eq!(
            o.manifest["metadata"]["namespace"].as_str(),
            o.namespace.as_deref(),
            "{o:?}"
        );
        assert_eq!(o.manifest["metadata"]["labels"]["tenant"], "acme", "{o:?}");
        assert_eq!(
            o.manifest["metadata"]["labels"][MANAGED_BY_LABEL],
            FIELD_MANAGER
        );
    }
}

#[test]
fn the_namespace_enforces_the_restricted_pod_security_standard() {
    let ns = namespace("tenant-acme", "acme");
    let labels = &ns.manifest["metadata"]["labels"];
    assert_eq!(ns.namespace, None);
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(
        labels["pod-security.kubernetes.io/enforce-version"],
        "latest"
    );
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
}

#[test]
fn the_service_account_names_the_identity_tenant_only_when_asked() {
    let same = service_account("ns", "sa", "acme", "client-1", None);
    let annotations = &same.manifest["metadata"]["annotations"];
    assert_eq!(annotations[WORKLOAD_IDENTITY_CLIENT_ID], "client-1");
    assert!(annotations.get(WORKLOAD_IDENTITY_TENANT_ID).is_none());
    assert_eq!(
        same.manifest["metadata"]["labels"][WORKLOAD_IDENTITY_USE_LABEL],
        "true"
    );
    assert_eq!(same.manifest["automountServiceAccountToken"], false);

    let cross = service_account("ns", "sa", "acme", "client-1", Some("entra-2"));
    assert_eq!(
        cross.manifest["metadata"]["annotations"][WORKLOAD_IDENTITY_TENANT_ID],
        "entra-2"
    );
}

#[test]
fn guardrails_bind_the_admin_group_only_when_one_is_given() {
    let without = guardrails("ns", "acme", &spec(None));
    assert!(without.iter().all(|o| o.kind != "RoleBinding"));
    assert_eq!(without.len(), 5);
    let with = guardrails("ns", "acme", &spec(Some("0000-group")));
    let binding = with
        .iter()
        .find(|o| o.kind == "RoleBinding")
        .expect("binding");
    assert_eq!(
        binding.manifest["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "0000-group"}])
    );
    assert_eq!(
        binding.manifest["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
               "name": TENANT_ADMIN_CLUSTER_ROLE})
    );
    assert!(
        with.iter().all(|o| o.kind != "Role"),
        "the worker writes no Role"
    );
}

#[test]
fn the_quota_caps_requests_limits_and_pods() {
    let objects = guardrails("ns", "acme", &spec(None));
    let quota = objects
        .iter()
        .find(|o| o.kind == "ResourceQuota")
        .expect("quota");
    assert_eq!(
        quota.manifest["spec"]["hard"],
        json!({"requests.cpu": "8", "limits.cpu": "8", "requests.memory": "32Gi",
               "limits.memory": "32Gi", "pods": "50"})
    );
}

#[test]
fn the_network_policies_deny_by_default_and_allow_dns_and_the_namespace() {
    let objects = guardrails("ns", "acme", &spec(None));
    let policy = |name: &str| {
        objects
            .iter()
            .find(|o| o.kind == "NetworkPolicy" && o.name == name)
            .expect("policy")
            .manifest["spec"]
            .clone()
    };
    assert_eq!(
        policy(DEFAULT_DENY_POLICY_NAME),
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    );
    let dns = policy(ALLOW_DNS_POLICY_NAME);
    assert_eq!(
        dns["egress"][0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
    assert_eq!(
        dns["egress"][0]["to"][0],
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
               "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}})
    );
    let same = policy(ALLOW_SAME_NAMESPACE_POLICY_NAME);
    assert_eq!(same["ingress"], json!([{"from": [{"podSelector": {}}]}]));
    assert_eq!(same["egress"], json!([{"to": [{"podSelector": {}}]}]));
}

#[test]
fn the_egress_policy_allows_exactly_the_configured_cidrs_and_ports_over_tcp_and_nothing_else() {
    let objects = guardrails("ns", "acme", &spec_with_egress(None));
    let policy = find(&objects, "NetworkPolicy", ALLOW_EGRESS_AZURE_POLICY_NAME).expect("policy");
    assert_eq!(policy.namespace.as_deref(), Some("ns"));
    assert_eq!(
        policy.manifest["spec"],
        json!({
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "20.190.128.0/18"}},
                           {"ipBlock": {"cidr": "2603:1006:2000::/48"}}],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "20.60.0.0/16"}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}],
                },
            ],
        })
    );
}

#[test]
fn no_egress_policy_is_built_when_no_egress_is_configured() {
    let objects = guardrails("ns", "acme", &spec(Some("g")));
    assert!(find(&objects, "NetworkPolicy", ALLOW_EGRESS_AZURE_POLICY_NAME).is_none());
    assert_eq!(
        objects.iter().filter(|o| o.kind == "NetworkPolicy").count(),
        3
    );
}

#[test]
fn configuring_egress_leaves_every_other_guard_rail_as_it_was() {
    let without = guardrails("ns", "acme", &spec(Some("g")));
    let with = guardrails("ns", "acme", &spec_with_egress(Some("g")));
    let others: Vec<_> = with
        .iter()
        .filter(|o| o.name != ALLOW_EGRESS_AZURE_POLICY_NAME)
        .cloned()
        .collect();
    // Default deny, DNS and the same namespace: byte for byte what they were.
    assert_eq!(others, without);
    assert_eq!(with.len(), without.len() + 1);
}

#[test]
fn an_egress_rule_without_cidrs_or_ports_is_left_out_rather_than_allowing_everything() {
    // An empty `to` would mean every destination, an empty `ports` every port.
    let defaults = GuardrailDefaults {
        egress: vec![
            rule("no-cidrs", &[], &[443]),
            rule("no-ports", &["20.60.0.0/16"], &[]),
        ],
        ..GuardrailDefaults::default()
    };
    let objects = guardrails("ns", "acme", &GuardrailSpec::from_defaults(&defaults, None));
    assert!(find(&objects, "NetworkPolicy", ALLOW_EGRESS_AZURE_POLICY_NAME).is_none());

    let defaults = GuardrailDefaults {
        egress: vec![
            rule("no-cidrs", &[], &[443]),
            rule("entra", &["20.190.128.0/18"], &[443]),
        ],
        ..GuardrailDefaults::default()
    };
    let objects = guardrails("ns", "acme", &GuardrailSpec::from_defaults(&defaults, None));
    let policy = find(&objects, "NetworkPolicy", ALLOW_EGRESS_AZURE_POLICY_NAME).expect("policy");
    let egress = policy.manifest["spec"]["egress"]
        .as_array()
        .expect("egress");
    assert_eq!(egress.len(), 1);
    assert_eq!(
        egress[0]["to"],
        json!([{"ipBlock": {"cidr": "20.190.128.0/18"}}])
    );
}

/// The admins' ClusterRole ships in `k8s/base/rbac.yaml`; this reads that very file.
#[test]
fn the_tenant_admin_cluster_role_cannot_touch_rbac_or_the_guardrails() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../k8s/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("k8s/base/rbac.yaml");
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == TENANT_ADMIN_CLUSTER_ROLE)
        .expect("the tenant admin ClusterRole is shipped");
    let rules = role["rules"].as_array().expect("rules");
    for rule in rules {
        let groups = rule["apiGroups"].as_array().expect("groups");
        assert!(!groups.contains(&json!("rbac.authorization.k8s.io")));
        assert!(!groups.contains(&json!("*")));
        let verbs = rule["verbs"].as_array().expect("verbs");
        assert!(!verbs.contains(&json!("escalate")) && !verbs.contains(&json!("bind")));
        let resources = rule["resources"].as_array().expect("resources");
        let writes = verbs.contains(&json!("create"));
        for guarded in [
            "networkpolicies",
            "resourcequotas",
            "limitranges",
            "serviceaccounts",
        ] {
            assert!(!(writes && resources.contains(&json!(guarded))), "{rule}");
        }
    }
}

#[test]
fn the_workload_runs_on_the_tenant_nodes_as_the_tenant_identity() {
    let template = WorkloadTemplate::default();
    let d = workload("tenant-acme", "acme", "acme-sa", &template, 3);
    assert_eq!(d.kind, "Deployment");
    assert_eq!(d.api_version, "apps/v1");
    let spec = &d.manifest["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "acme-sa");
    assert_eq!(pod["nodeSelector"], json!({"tenant": "acme"}));
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "tenant", "operator": "Equal", "value": "acme", "effect": "NoSchedule"}])
    );
    assert_eq!(
        spec["template"]["metadata"]["labels"][WORKLOAD_IDENTITY_USE_LABEL],
        "true"
    );
    let labels = spec["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    for (k, v) in spec["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(labels.get(k), Some(v), "selector {k} must match the pods");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], json!(template.image));
    assert_eq!(c["ports"][0]["containerPort"], json!(template.port));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": template.cpu, "memory": template.memory})
    );
}

#[test]
fn tenant_object_refs_cover_every_object_the_builders_make_namespace_last() {
    let mut built = vec![
        namespace("ns", "acme"),
        service_account("ns", "sa", "acme", "cid", None),
        workload("ns", "acme", "sa", &WorkloadTemplate::default(), 1),
    ];
    built.extend(guardrails("ns", "acme", &spec_with_egress(Some("g"))));
    let refs = tenant_object_refs("ns", "sa");
    assert_eq!(refs.len(), built.len());
    for o in &built {
        assert!(refs.contains(&o.reference()), "{} missing", o.reference());
    }
    assert_eq!(refs.last(), Some(&namespace_ref("ns")));
}

#[test]
fn host_name_egress_becomes_a_cilium_policy_for_exactly_those_names_and_ports() {
    let mut s = spec(None);
    s.fqdn_egress = Some(
        crate::FqdnEgress {
            engine: crate::FqdnEngine::Cilium,
            names: vec![
                "login.microsoftonline.com".into(),
                "{storage_account}.blob.core.windows.net".into(),
            ],
            ports: vec![443],
        }
        .for_account("sttenants"),
    );
    let objects = guardrails("ns", "acme", &s);
    let policy = objects
        .iter()
        .find(|o| o.kind == CILIUM_POLICY_KIND)
        .expect("a Cilium policy");
    assert_eq!(policy.reference(), fqdn_policy_ref("ns"));
    assert_eq!(policy.manifest["metadata"]["labels"][TENANT_LABEL], "acme");
    let egress = &policy.manifest["spec"]["egress"];
    assert_eq!(
        egress[1]["toFQDNs"],
        json!([{"matchName": "login.microsoftonline.com"}, {"matchName": "sttenants.blob.core.windows.net"}])
    );
    assert_eq!(
        egress[1]["toPorts"],
        json!([{"ports": [{"port": "443", "protocol": "TCP"}]}])
    );
    // DNS to kube-dns only, with the rule that lets the engine learn the names.
    assert_eq!(
        egress[0]["toPorts"][0]["rules"]["dns"],
        json!([{"matchPattern": "*"}])
    );
    assert_eq!(egress.as_array().unwrap().len(), 2);
    // Without the setting, no such object.
    assert!(
        guardrails("ns", "acme", &spec(None))
            .iter()
            .all(|o| o.kind != CILIUM_POLICY_KIND)
    );
}

#[test]
fn the_default_workload_template_declares_the_port_its_sample_image_serves_on() {
    let template = WorkloadTemplate::default();
    assert!(
        template.image.contains("aks-helloworld"),
        "{}",
        template.image
    );
    let d = workload("ns", "acme", "sa", &template, 1);
    assert_eq!(
        d.manifest["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
}
