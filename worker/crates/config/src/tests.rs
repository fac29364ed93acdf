//! Tests of loading, validation and redaction of the whole configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

#[test]
fn defaults_are_valid_and_point_at_loopback_simulators() {
    let cfg = Config::load(None, Vec::new()).expect("defaults load");
    let t = cfg.target(None).expect("default target");
    assert_eq!(t.name, "default");
    assert!(t.arm_endpoint.starts_with("http://127.0.0.1"));
}

#[test]
fn environment_overrides_defaults() {
    let env = vec![(
        "ONBOARD__SAGA__MESSAGE_BUDGET_MS".to_string(),
        "1234".to_string(),
    )];
    let cfg = Config::load(None, env).expect("loads");
    assert_eq!(cfg.saga.message_budget_ms, 1234);
}

#[test]
fn a_file_with_its_own_targets_does_not_inherit_the_loopback_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let mut prod = Target::local("prod");
    prod.arm_endpoint = "https://management.azure.com".into();
    prod.kubernetes = KubernetesConfig {
        in_cluster: true,
        ..KubernetesConfig::default()
    };
    let file = Config {
        default_target: "prod".into(),
        targets: BTreeMap::from([("prod".to_string(), prod)]),
        ..Config::default()
    };
    let text = toml::to_string(&file).expect("the configuration serialises to TOML");
    std::fs::write(&path, text).expect("write");
    let cfg = Config::load(Some(&path), Vec::new()).expect("loads");
    assert_eq!(cfg.targets.keys().collect::<Vec<_>>(), vec!["prod"]);
    assert_eq!(cfg.targets["prod"].kubernetes.server, None);
}

#[test]
fn a_service_bus_transport_without_credential_or_entities_is_refused_naming_each_setting() {
    let mut cfg = Config::default().normalised();
    cfg.transport = TransportConfig::ServiceBus {
        namespace: "sb-onboard".into(),
        queue: String::new(),
        topic: "tenant-events".into(),
        subscription: String::new(),
        credential: None,
        connection_string: None,
    };
    let text = cfg.validate().expect_err("invalid").to_string();
    assert!(text.contains("transport.queue is empty"), "{text}");
    assert!(text.contains("transport.credential is missing"), "{text}");
    assert!(text.contains("<name>.servicebus.windows.net"), "{text}");
}

#[test]
fn validation_names_every_problem() {
    let mut cfg = Config::default().normalised();
    cfg.default_target = "nope".into();
    cfg.worker.concurrency = 0;
    if let Some(t) = cfg.targets.get_mut("default") {
        t.cluster_name.clear();
    }
    let err = cfg.validate().expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("default_target \"nope\""), "{text}");
    assert!(
        text.contains("targets.default.cluster_name is empty"),
        "{text}"
    );
    assert!(text.contains("worker.concurrency"), "{text}");
}

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    Config::load(Some(&path), Vec::new())
}

#[test]
fn an_azure_table_journal_with_nothing_set_names_every_missing_setting() {
    let err = load_toml("[journal]\nkind = \"azure_table\"\n").expect_err("invalid");
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err}");
    };
    let text = err.to_string();
    assert_eq!(problems.len(), 3, "{text}");
    assert!(text.contains("journal.endpoint is empty"), "{text}");
    assert!(text.contains("journal.table is empty"), "{text}");
    assert!(text.contains("journal.credential is missing"), "{text}");
}

#[test]
fn a_production_azure_table_journal_loads_with_workload_identity() {
    let cfg = load_toml(
        r#"
[journal]
kind = "azure_table"
endpoint = "https://stonboard.table.core.windows.net/"
table = "sagajournal"
[journal.credential]
kind = "workload_identity"
tenant_id = "00000000-0000-0000-0000-00000000000a"
client_id = "00000000-0000-0000-0000-000000000000"
token_file = "/var/run/secrets/azure/tokens/azure-identity-token"
"#,
    )
    .expect("loads");
    let JournalConfig::AzureTable {
        table,
        credential,
        create_table,
        ..
    } = &cfg.journal
    else {
        panic!("not azure_table: {:?}", cfg.journal);
    };
    assert_eq!(table, "sagajournal");
    assert!(!create_table);
    assert!(matches!(
        credential,
        Some(TableCredentialConfig::WorkloadIdentity(_))
    ));
}

#[test]
fn shared_key_is_refused_for_a_real_storage_account_and_bad_values_are_named() {
    let err = load_toml(
        r#"
[journal]
kind = "azure_table"
endpoint = "https://stonboard.table.core.windows.net"
table = "1bad"
[journal.credential]
kind = "shared_key"
account = "stonboard"
key = "not base64!"
[health]
address = "everywhere"
[targets.prod]
subscription_id = "s"
resource_group = "rg"
location = "westeurope"
cluster_resource_group = "rg"
cluster_name = "aks"
oidc_issuer = "https://issuer.example/"
storage_resource_group = "rg"
storage_account = "st"
identity_entra_tenant_id = "t"
cluster_entra_tenant_id = "t"
arm_endpoint = "https://management.azure.com"
[targets.prod.credential]
kind = "workload_identity"
tenant_id = "t"
client_id = ""
token_file = "/token"
[targets.prod.kubernetes]
in_cluster = true
"#,
    )
    .expect_err("invalid");
    let text = err.to_string();
    for expected in [
        "journal.table \"1bad\" is not a valid table name",
        "journal.credential.key is not base64",
        "journal.credential kind shared_key is for Azurite only",
        "health.address \"everywhere\" is not an IP address",
        "targets.prod.credential.client_id is empty",
        "default_target \"default\" is not one of the configured targets (prod)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn secrets_never_show_in_debug_or_in_the_printed_configuration() {
    let cfg = load_toml(
        r#"
[journal]
kind = "azure_table"
endpoint = "http://127.0.0.1:10002/devstoreaccount1"
table = "journal"
create_table = true
[journal.credential]
kind = "shared_key"
account = "devstoreaccount1"
key = "c2VjcmV0LWtleS12YWx1ZQ=="
"#,
    )
    .expect("loads");
    let JournalConfig::AzureTable {
        credential: Some(TableCredentialConfig::SharedKey { key, .. }),
        ..
    } = &cfg.journal
    else {
        panic!("not shared key: {:?}", cfg.journal);
    };
    assert_eq!(key.expose(), "c2VjcmV0LWtleS12YWx1ZQ==");
    let shown = [
        format!("{cfg:?}"),
        cfg.redacted_toml().expect("toml"),
        cfg.redacted_json().expect("json"),
    ];
    for text in shown {
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
}

#[test]
fn the_printed_configuration_reads_back_as_the_same_configuration() {
    let mut cfg = Config::load(None, Vec::new()).expect("defaults");
    cfg.journal = JournalConfig::AzureTable {
        endpoint: "https://stonboard.table.core.windows.net".into(),
        table: "sagajournal".into(),
        credential: Some(TableCredentialConfig::AzureCli(Default::default())),
        create_table: false,
    };
    cfg.health.port = 9090;
    cfg.telemetry.log_format = LogFormat::Json;
    let cfg = cfg.with_absolute_paths(std::path::Path::new("/srv/worker"));
    let text = cfg.redacted_toml().expect("toml");
    let back = load_toml(&text).expect("reads back");
    assert_eq!(back, cfg, "{text}");
}

#[test]
fn the_environment_alone_can_switch_the_journal_to_azure_table() {
    let env = [
        ("ONBOARD__JOURNAL__KIND", "azure_table"),
        (
            "ONBOARD__JOURNAL__ENDPOINT",
            "http://127.0.0.1:10002/devstoreaccount1",
        ),
        ("ONBOARD__JOURNAL__TABLE", "journal"),
        ("ONBOARD__JOURNAL__CREATE_TABLE", "true"),
        ("ONBOARD__JOURNAL__CREDENTIAL__KIND", "shared_key"),
        ("ONBOARD__JOURNAL__CREDENTIAL__ACCOUNT", "devstoreaccount1"),
        ("ONBOARD__JOURNAL__CREDENTIAL__KEY", "a2V5"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let cfg = Config::load(None, env).expect("loads");
    assert!(matches!(
        cfg.journal,
        JournalConfig::AzureTable {
            create_table: true,
            credential: Some(TableCredentialConfig::SharedKey { .. }),
            ..
        }
    ));
    // The embedded journal's keys still override one at a time.
    let env = [(
        "ONBOARD__JOURNAL__PATH".to_string(),
        "/tmp/j.db".to_string(),
    )];
    let cfg = Config::load(None, env).expect("loads");
    assert_eq!(
        cfg.journal,
        JournalConfig::Sqlite {
            path: PathBuf::from("/tmp/j.db")
        }
    );
}

const EGRESS: &str = r#"
[[guardrails.egress]]
name = "entra"
cidrs = ["20.190.128.0/18", "2603:1006:2000::/48"]

[[guardrails.egress]]
name = "storage"
cidrs = ["20.60.0.0/16"]
ports = [443, 8443]
"#;

#[test]
fn guardrails_egress_rules_load_from_toml_with_https_as_the_default_port() {
    let cfg = load_toml(EGRESS).expect("loads");
    assert_eq!(
        cfg.guardrails.egress,
        vec![
            EgressRule {
                name: "entra".into(),
                cidrs: vec!["20.190.128.0/18".into(), "2603:1006:2000::/48".into()],
                ports: vec![443],
            },
            EgressRule {
                name: "storage".into(),
                cidrs: vec!["20.60.0.0/16".into()],
                ports: vec![443, 8443],
            },
        ]
    );
    // The rest of [guardrails] keeps its defaults, and the saga sees the rules.
    assert_eq!(cfg.guardrails.pods, GuardrailDefaults::default().pods);
    assert_eq!(cfg.provisioning().guardrails.egress, cfg.guardrails.egress);
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn egress_rules_survive_the_printed_configuration() {
    let cfg = load_toml(EGRESS).expect("loads");
    // As `config check` prints it: paths absolute, so that the file reads back from anywhere.
    let cfg = cfg.with_absolute_paths(std::path::Path::new("/srv/worker"));
    let text = cfg.redacted_toml().expect("toml");
    assert_eq!(load_toml(&text).expect("reads back"), cfg, "{text}");
}

#[test]
fn a_bad_cidr_or_port_0_in_an_egress_rule_is_refused_naming_the_field() {
    let err = load_toml(
        r#"
[[guardrails.egress]]
name = "entra"
cidrs = ["20.190.128.0/18", "login.microsoftonline.com", "300.1.2.0/24", "10.1.2.3/8", "10.0.0.0/33", "0.0.0.0/0", "2603:1006::1/32"]
ports = [443, 0]

[[guardrails.egress]]
name = ""
cidrs = []
ports = []
"#,
    )
    .expect_err("invalid");
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err}");
    };
    let text = err.to_string();
    for expected in [
        "guardrails.egress[0].cidrs[1] \"login.microsoftonline.com\" is not a CIDR",
        "guardrails.egress[0].cidrs[2] \"300.1.2.0/24\" is not a CIDR",
        "guardrails.egress[0].cidrs[3] \"10.1.2.3/8\" has host bits set: the network is 10.0.0.0/8",
        "guardrails.egress[0].cidrs[4] \"10.0.0.0/33\" has a prefix longer than 32 bits",
        "guardrails.egress[0].cidrs[5] \"0.0.0.0/0\" allows every address",
        "guardrails.egress[0].cidrs[6] \"2603:1006::1/32\" has host bits set: the network is 2603:1006::/32",
        "guardrails.egress[0].ports[1] is 0: a port is 1 to 65535",
        "guardrails.egress[1].name is empty",
        "guardrails.egress[1].cidrs is empty",
        "guardrails.egress[1].ports is empty",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // The good CIDR and the good port are not among the problems.
    assert_eq!(problems.len(), 10, "{text}");
}

#[test]
fn a_port_above_65535_in_an_egress_rule_is_refused_naming_the_field() {
    let err = load_toml(
        "[[guardrails.egress]]\nname = \"entra\"\ncidrs = [\"20.190.128.0/18\"]\nports = [65536]\n",
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("guardrails.egress"), "{text}");
    assert!(text.contains("65536"), "{text}");
}

#[test]
fn no_egress_configured_is_a_warning_that_tenant_pods_cannot_reach_entra_or_storage() {
    let cfg = Config::load(None, Vec::new()).expect("defaults load");
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for expected in [
        "guardrails.egress is empty",
        "cannot reach Entra",
        "storage account",
        "AzureActiveDirectory",
        "Storage.<region>",
    ] {
        assert!(warnings[0].contains(expected), "{expected:?}: {warnings:?}");
    }
}

#[test]
fn the_arm_write_budget_defaults_to_arms_own_bucket_and_is_set_in_its_section() {
    let cfg = Config::load(None, Vec::new()).expect("defaults load");
    assert_eq!(cfg.arm.write_bucket, 200);
    assert_eq!(cfg.arm.write_refill_per_sec, 10.0);
    let cfg = load_toml("[arm]\nwrite_bucket = 50\nwrite_refill_per_sec = 2.5\n").expect("loads");
    assert_eq!(
        cfg.arm,
        ArmConfig {
            write_bucket: 50,
            write_refill_per_sec: 2.5
        }
    );
    // As `config check` prints it: paths absolute, so that the file reads back from anywhere.
    let cfg = cfg.with_absolute_paths(std::path::Path::new("/srv/worker"));
    let text = cfg.redacted_toml().expect("toml");
    assert_eq!(load_toml(&text).expect("reads back"), cfg, "{text}");
    let env =
        [("ONBOARD__ARM__WRITE_REFILL_PER_SEC", "4")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(
        Config::load(None, env)
            .expect("loads")
            .arm
            .write_refill_per_sec,
        4.0
    );
}

#[test]
fn a_zero_negative_or_absurd_arm_write_budget_is_refused_naming_the_field() {
    for (toml, expected) in [
        ("write_bucket = 0", "arm.write_bucket is 0"),
        (
            "write_bucket = 1000000",
            "arm.write_bucket 1000000 is above",
        ),
        (
            "write_refill_per_sec = 0.0",
            "arm.write_refill_per_sec 0 must be above 0",
        ),
        (
            "write_refill_per_sec = -1.5",
            "arm.write_refill_per_sec -1.5 must be above 0",
        ),
        (
            "write_refill_per_sec = 200000.0",
            "arm.write_refill_per_sec 200000 is above",
        ),
        ("write_bucket = -5", "arm.write_bucket"),
        ("write_burst = 5", "write_burst"),
    ] {
        let err = load_toml(&format!("[arm]\n{toml}\n")).expect_err(toml);
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{toml}: {expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn host_name_egress_loads_with_entra_and_the_storage_account_by_default() {
    let cfg = load_toml(
        r#"
[guardrails.fqdn_egress]
engine = "cilium"
"#,
    )
    .expect("loads");
    let fqdn = cfg.guardrails.fqdn_egress.clone().expect("configured");
    assert_eq!(fqdn.engine, onboarding_providers::FqdnEngine::Cilium);
    assert_eq!(fqdn.ports, vec![443]);
    assert_eq!(
        fqdn.for_account("sttenants").names,
        vec![
            "login.microsoftonline.com".to_string(),
            "sttenants.blob.core.windows.net".to_string()
        ]
    );
    // As `config check` prints it: paths absolute, so that the file reads back from anywhere.
    let cfg = cfg.with_absolute_paths(std::path::Path::new("/srv/worker"));
    let text = cfg.redacted_toml().expect("toml");
    assert_eq!(load_toml(&text).expect("reads back"), cfg, "{text}");
}

#[test]
fn a_wildcard_host_name_or_port_0_in_host_name_egress_is_refused_naming_the_field() {
    let err = load_toml(
        r#"
[guardrails.fqdn_egress]
engine = "cilium"
names = ["*.blob.core.windows.net", "login.microsoftonline.com"]
ports = [0]
"#,
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("guardrails.fqdn_egress.names[0]") && err.contains("no wildcards"),
        "{err}"
    );
    assert!(
        err.contains("guardrails.fqdn_egress.ports[0] is 0"),
        "{err}"
    );
    assert!(!err.contains("names[1]"), "{err}");
}

#[test]
fn config_check_names_every_bad_value_at_once() {
    let err = load_toml(
        r#"
default_target = "prod"

[worker]
concurrency = 0

[saga]
step_attempt_limit = 100000
message_budget_ms = 0

[targets.prod]
subscription_id = "not-a-guid"
resource_group = "rg-tenants"
location = "West Europe"
cluster_resource_group = "rg-aks"
cluster_name = "aks prod"
oidc_issuer = "https://oidc.example/"
storage_resource_group = "rg-st"
storage_account = "St_Tenants"
identity_entra_tenant_id = "00000000-0000-0000-0000-0000000000e1"
cluster_entra_tenant_id = "00000000-0000-0000-0000-0000000000e1"
arm_endpoint = "http://management.azure.com"

[targets.prod.credential]
kind = "azure_cli"

[targets.prod.kubernetes]
in_cluster = true
"#,
    )
    .expect_err("refused")
    .to_string();
    for expected in [
        "worker.concurrency is 0",
        "saga.step_attempt_limit is 100000",
        "saga.message_budget_ms",
        "targets.prod.subscription_id \"not-a-guid\" is not a GUID",
        "targets.prod.location \"West Europe\"",
        "targets.prod.cluster_name \"aks prod\"",
        "targets.prod.storage_account \"St_Tenants\"",
        "targets.prod.arm_endpoint \"http://management.azure.com\" must be https",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

const SOVEREIGN_TARGET: &str = r#"
default_target = "gov"
[targets.gov]
subscription_id = "00000000-0000-0000-0000-000000000001"
resource_group = "rg-tenants"
location = "usgovvirginia"
cluster_resource_group = "rg-aks"
cluster_name = "aks"
oidc_issuer = "https://usgovvirginia.oic.prod-aks.azure.us/t/c/"
storage_resource_group = "rg-aks"
storage_account = "stonboard"
identity_entra_tenant_id = "00000000-0000-0000-0000-00000000000a"
cluster_entra_tenant_id = "00000000-0000-0000-0000-00000000000a"
arm_endpoint = "https://management.usgovcloudapi.net"
[targets.gov.credential]
kind = "workload_identity"
tenant_id = "00000000-0000-0000-0000-00000000000a"
client_id = "00000000-0000-0000-0000-000000000000"
cloud = { name = "us_government" }
[targets.gov.kubernetes]
in_cluster = true
"#;

fn gov_credential(cfg: &Config) -> onboarding_core::WorkloadIdentitySettings {
    match &cfg.target(None).expect("target").credential {
        CredentialConfig::WorkloadIdentity(s) => s.clone(),
        other => panic!("not workload identity: {other:?}"),
    }
}

#[test]
fn a_sovereign_cloud_is_one_line_of_the_credential() {
    let cfg = load_toml(SOVEREIGN_TARGET).expect("loads");
    let s = gov_credential(&cfg);
    assert_eq!(s.cloud.authority_host(), "https://login.microsoftonline.us");
    assert_eq!(
        s.cloud.service_bus_scope(),
        "https://servicebus.usgovcloudapi.net/.default"
    );
}

#[test]
fn the_webhooks_variables_fill_what_a_credential_leaves_out_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, SOVEREIGN_TARGET).expect("write");
    let env = vec![
        (
            "AZURE_FEDERATED_TOKEN_FILE".to_string(),
            "/var/run/secrets/azure/tokens/x/token".to_string(),
        ),
        (
            "AZURE_AUTHORITY_HOST".to_string(),
            "https://login.example.test/".to_string(),
        ),
    ];
    let cfg = Config::load(Some(&path), env).expect("loads");
    let s = gov_credential(&cfg);
    assert_eq!(
        s.token_file.as_deref(),
        Some(std::path::Path::new(
            "/var/run/secrets/azure/tokens/x/token"
        ))
    );
    // A credential that names its cloud keeps that cloud's authority.
    assert_eq!(s.cloud.authority_host(), "https://login.microsoftonline.us");
}

#[test]
fn an_authority_without_tls_is_a_configuration_problem_naming_the_setting() {
    let text = SOVEREIGN_TARGET.replace(
        r#"cloud = { name = "us_government" }"#,
        r#"cloud = { authority_host = "http://login.example.test" }"#,
    );
    let err = load_toml(&text).unwrap_err().to_string();
    assert!(
        err.contains("targets.gov.credential.cloud.authority_host"),
        "{err}"
    );
}

#[test]
fn relative_paths_in_a_file_are_relative_to_the_file_not_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[journal]\nkind = \"sqlite\"\npath = \"state/journal.db\"\n",
    )
    .expect("write");
    let cfg = Config::load(Some(&path), Vec::new()).expect("loads");
    let JournalConfig::Sqlite { path: journal } = &cfg.journal else {
        panic!("{:?}", cfg.journal)
    };
    assert_eq!(journal, &dir.path().join("state/journal.db"));
    // Not written in the file: the default stays relative to where the binary runs.
    let TransportConfig::Embedded { path: queue, .. } = &cfg.transport else {
        panic!("{:?}", cfg.transport)
    };
    assert_eq!(queue, &PathBuf::from(".local/queue.db"));
    // What `config check` prints reads back to the same files from anywhere.
    let printed = cfg.with_absolute_paths(std::path::Path::new("/srv/worker"));
    let TransportConfig::Embedded { path: queue, .. } = &printed.transport else {
        panic!()
    };
    assert_eq!(queue, &PathBuf::from("/srv/worker/.local/queue.db"));
}

#[test]
fn one_field_of_the_default_target_is_overridden_without_restating_the_rest() {
    let cfg =
        load_toml("[targets.default]\narm_endpoint = \"http://127.0.0.1:9999\"\n").expect("loads");
    let t = cfg.target(None).expect("the default target");
    assert_eq!(t.arm_endpoint, "http://127.0.0.1:9999");
    assert_eq!(
        t.cluster_name,
        Config::default().targets["default"].cluster_name
    );
    assert_eq!(cfg.targets.len(), 1);
    // A table of it is taken whole: a kubeconfig does not inherit the built-in server.
    let cfg = load_toml("[targets.default.kubernetes]\nkubeconfig = \"/etc/worker/kubeconfig\"\n")
        .expect("loads");
    let k = &cfg.target(None).expect("the default target").kubernetes;
    assert_eq!(k.kubeconfig, Some(PathBuf::from("/etc/worker/kubeconfig")));
    assert_eq!(k.server, None);
}

#[test]
fn workloads_can_be_turned_off() {
    let cfg = load_toml("[workload]\nenabled = false\n").expect("loads");
    assert!(cfg.workload_template().is_none());
    assert!(cfg.provisioning().workload.is_none());
    let on = load_toml("").expect("loads");
    assert!(on.workload_template().is_some());
}
