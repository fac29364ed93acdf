//! Checks of `infra/` and the `Dockerfile`: runs `scripts/check-infra.sh` (Bicep parse and
//! REST-spec checks, kustomize rendering, kubernetes-validate, KEDA CRD schemas), then asserts the
//! security properties the design depends on, from the Bicep text, the rendered manifests and
//! the worker's own config loader, and drives `infra/deploy.sh` against stand-in `az`/`kubectl`.
//!
//! Needs bash and python3 (the check script builds its venv in `.local/venv`) and `../shared`
//! beside the repository (Azure REST specs, KEDA CRDs).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The check script, run once per test binary; its renderings feed the manifest tests.

struct CheckRun {
    out_dir: PathBuf,
    output: Output,
}

fn check_run() -> &'static CheckRun {
    static RUN: OnceLock<CheckRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("infra-check");
        fs::create_dir_all(&out_dir).expect("create the rendering directory");
        let output = Command::new("bash")
            .arg(repo().join("scripts/check-infra.sh"))
            .env("ONBOARD_INFRA_CHECK_OUT", &out_dir)
            .current_dir(repo())
            .output()
            .expect("run bash scripts/check-infra.sh");
        CheckRun { out_dir, output }
    })
}

fn script_log(output: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Objects of one rendered kustomization (`base` or an overlay's directory name).
fn rendered(name: &str) -> Vec<Value> {
    let run = check_run();
    let path = run.out_dir.join(format!("{name}.yaml"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} was not rendered ({e}); check-infra.sh said:\n{}",
            path.display(),
            script_log(&run.output)
        )
    });
    documents(&text)
}

/// The objects of a multi-document YAML stream as written by the renderers (`---` lines).
fn documents(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let value: Value = serde_yaml::from_str(&current)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{current}"));
            if !value.is_null() {
                docs.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered manifests"))
}

fn text_at<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn check_infra_script_passes_on_the_committed_infrastructure() {
    let run = check_run();
    assert!(
        run.output.status.success(),
        "scripts/check-infra.sh failed:\n{}",
        script_log(&run.output)
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        stdout.contains("Bicep files parse; modules, properties and outputs check out"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check-infra: all infra checks passed"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bicep, read as text. A small scanner cuts `resource` and `module` blocks out of a file,
// skipping strings and comments so braces inside them (the ABAC condition) do not count.

#[derive(Debug)]
struct Block {
    symbol: String,
    /// Resource type without the API version, or the module's path.
    target: String,
    body: String,
}

fn blocks(text: &str, keyword: &str) -> Vec<Block> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(&format!("{keyword} ")) {
            let mut parts = rest.splitn(2, ' ');
            let symbol = parts.next().unwrap_or_default().to_string();
            let quoted = parts.next().unwrap_or_default();
            let target = quoted
                .split('\'')
                .nth(1)
                .unwrap_or_default()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string();
            let open = line_start
                + line
                    .find('{')
                    .unwrap_or_else(|| panic!("{keyword} {symbol}: no opening brace"));
            let close = matching_brace(bytes, open);
            out.push(Block {
                symbol,
                target,
                body: text[open..=close].to_string(),
            });
        }
        line_start += line.len();
    }
    out
}

fn matching_brace(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' if bytes[i..].starts_with(b"'''") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"'''") {
                    i += 1;
                }
                i += 2;
            }
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced braces from byte {open}");
}

/// The value text of the first `key: value` line in a block.
fn prop<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
}

fn resources_of(file: &str, rtype: &str) -> Vec<Block> {
    blocks(&read(file), "resource")
        .into_iter()
        .filter(|b| b.target == rtype)
        .collect()
}

fn bicep_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("infra")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read infra/") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "bicep") {
                let text = fs::read_to_string(&path).expect("read a Bicep file");
                files.push((path.display().to_string(), text));
            }
        }
    }
    assert!(files.len() >= 2, "expected Bicep files under infra/");
    files
}

const QUEUE: &str = "Microsoft.ServiceBus/namespaces/queues";
const TOPIC: &str = "Microsoft.ServiceBus/namespaces/topics";
const ROLE_ASSIGNMENT: &str = "Microsoft.Authorization/roleAssignments";
const SB_MODULE: &str = "infra/modules/servicebus.bicep";
const BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";

#[test]
fn service_bus_namespace_disables_local_auth() {
    let namespaces = resources_of(SB_MODULE, "Microsoft.ServiceBus/namespaces");
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
    assert_eq!(prop(&namespaces[0].body, "disableLocalAuth"), Some("true"));
    // Sessions need Standard or Premium.
    let sku = read(SB_MODULE);
    assert!(
        !sku.contains("'Basic'"),
        "the Basic tier has no sessions or topics"
    );
}

#[test]
fn no_output_exposes_a_key_or_connection_string() {
    for (path, text) in bicep_files() {
        assert!(
            !text.contains("listKeys("),
            "{path} calls listKeys(): keys must never be read"
        );
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("output "))
        {
            let lower = line.to_lowercase();
            for word in [
                "listkeys(",
                "connectionstring",
                "primarykey",
                "secondarykey",
                "sharedaccesskey",
            ] {
                assert!(!lower.contains(word), "{path}: {line}");
            }
        }
    }
}

#[test]
fn commands_queue_requires_sessions_and_duplicate_detection_with_an_explicit_window() {
    let queues = resources_of(SB_MODULE, QUEUE);
    assert_eq!(queues.len(), 1);
    let body = &queues[0].body;
    assert_eq!(prop(body, "requiresSession"), Some("true"));
    assert_eq!(prop(body, "requiresDuplicateDetection"), Some("true"));
    assert_eq!(
        prop(body, "duplicateDetectionHistoryTimeWindow"),
        Some("duplicateDetectionWindow")
    );
    assert!(read(SB_MODULE).contains("param duplicateDetectionWindow string = 'PT10M'"));
}

#[test]
fn commands_queue_dead_letters_after_ten_deliveries_and_on_expiry_with_a_one_minute_lock() {
    let text = read(SB_MODULE);
    let body = &resources_of(SB_MODULE, QUEUE)[0].body;
    assert_eq!(prop(body, "maxDeliveryCount"), Some("maxDeliveryCount"));
    assert!(text.contains("param maxDeliveryCount int = 10"));
    assert_eq!(prop(body, "deadLetteringOnMessageExpiration"), Some("true"));
    assert_eq!(prop(body, "lockDuration"), Some("lockDuration"));
    assert!(text.contains("param lockDuration string = 'PT1M'"));
    assert_eq!(
        prop(body, "defaultMessageTimeToLive"),
        Some("messageTimeToLive")
    );
    assert!(text.contains("param messageTimeToLive string = 'P14D'"));
}

#[test]
fn events_topic_detects_duplicates_within_the_same_window() {
    let topics = resources_of(SB_MODULE, TOPIC);
    assert_eq!(topics.len(), 1);
    assert_eq!(
        prop(&topics[0].body, "requiresDuplicateDetection"),
        Some("true")
    );
    assert_eq!(
        prop(&topics[0].body, "duplicateDetectionHistoryTimeWindow"),
        Some("duplicateDetectionWindow")
    );
    assert!(read(SB_MODULE).contains("param topicName string = 'tenant-events'"));
}

#[test]
fn rbac_administrator_is_narrowed_to_assigning_blob_data_contributor_to_other_service_principals() {
    let file = "infra/modules/storage-roles.bicep";
    let text = read(file);
    let delegation = resources_of(file, ROLE_ASSIGNMENT)
        .into_iter()
        .find(|b| b.symbol == "workerDelegatesBlobAccess")
        .expect("the RBAC administrator assignment");
    assert!(
        text.contains(
            "roleBasedAccessControlAdministrator: 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'"
        )
    );
    assert_eq!(
        prop(&delegation.body, "roleDefinitionId"),
        Some(
            "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.roleBasedAccessControlAdministrator)"
        )
    );
    assert_eq!(
        prop(&delegation.body, "condition"),
        Some("delegationCondition")
    );
    assert_eq!(prop(&delegation.body, "conditionVersion"), Some("'2.0'"));
    // A multi-line string cannot interpolate: the worker's principal id goes in by replace().
    assert!(text.contains(
        "var delegationCondition = replace(delegationConditionTemplate, 'WORKER_PRINCIPAL_ID', workerPrincipalId)"
    ));
    let condition: String = text
        .split("var delegationConditionTemplate = '''")
        .nth(1)
        .and_then(|rest| rest.split("'''").next())
        .expect("the condition string")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for required in [
        "!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})",
        &format!(
            "@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{BLOB_DATA_CONTRIBUTOR}}}"
        ),
        "@Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}",
        "@Request[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}",
        "!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})",
        &format!(
            "@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{BLOB_DATA_CONTRIBUTOR}}}"
        ),
        "@Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}",
        "@Resource[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}",
    ] {
        assert!(
            condition.contains(required),
            "condition lacks {required}:\n{condition}"
        );
    }
    // Only the one role id may appear in the condition.
    let guids = condition.matches("GuidEquals {").count();
    assert_eq!(guids, 2, "{condition}");
    assert_eq!(condition.matches(BLOB_DATA_CONTRIBUTOR).count(), 2);
}

/// `infra/checks/bicep_check.py` on a copy of `infra/` in which `storage-roles.bicep` has each
/// `(from, to)` replacement applied (each `from` must occur exactly once).
fn bicep_check_on_a_copy(replacements: &[(&str, &str)]) -> Output {
    // The venv (pycep) is built by the check script.
    let check = check_run();
    let python = repo().join(".local/venv/bin/python");
    assert!(python.exists(), "no venv:\n{}", script_log(&check.output));
    let dir = tempfile::tempdir().expect("tempdir");
    let infra = dir.path().join("infra");
    let mut pending = vec![(repo().join("infra"), infra.clone())];
    while let Some((from, to)) = pending.pop() {
        fs::create_dir_all(&to).expect("create a directory of the copy");
        for entry in fs::read_dir(&from).expect("read a directory of infra/") {
            let path = entry.expect("directory entry").path();
            let target = to.join(path.file_name().expect("a file name"));
            if path.is_dir() {
                pending.push((path, target));
            } else {
                fs::copy(&path, &target).expect("copy a file of infra/");
            }
        }
    }
    let file = infra.join("modules/storage-roles.bicep");
    let mut text = fs::read_to_string(&file).expect("read the copied storage-roles.bicep");
    for (from, to) in replacements {
        assert_eq!(
            text.matches(from).count(),
            1,
            "storage-roles.bicep no longer has {from:?}"
        );
        text = text.replace(from, to);
    }
    fs::write(&file, text).expect("write the mutated storage-roles.bicep");
    let shared = std::env::var_os("ONBOARD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    Command::new(&python)
        .arg(repo().join("infra/checks/bicep_check.py"))
        .arg(&infra)
        .arg(shared.join("azure-rest-specs"))
        .output()
        .expect("run bicep_check.py")
}

#[test]
fn bicep_check_fails_if_the_delegation_lets_the_worker_grant_itself_or_other_roles() {
    let passed = bicep_check_on_a_copy(&[]);
    assert!(passed.status.success(), "{}", script_log(&passed));

    let write_exclusion = "  AND\n  @Request[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}\n";
    let delete_exclusion = "  AND\n  @Resource[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}\n";
    let lacks = |branch: &str, what: &str| {
        format!(
            "role assignment workerDelegatesBlobAccess (Role Based Access Control Administrator): \
             the condition's {branch} branch lacks {what}"
        )
    };
    let own_id = "the exclusion of its own principal id (workerPrincipalId)";
    let cases = [
        (
            "the worker may grant itself the role",
            vec![(write_exclusion, "")],
            vec![lacks("write", own_id)],
        ),
        (
            "the worker may delete its own assignments",
            vec![(delete_exclusion, "")],
            vec![lacks("delete", own_id)],
        ),
        (
            "the placeholder is never replaced by the worker's id",
            vec![(
                "condition: delegationCondition\n",
                "condition: delegationConditionTemplate\n",
            )],
            vec![lacks("write", own_id), lacks("delete", own_id)],
        ),
        (
            "the worker may grant a second role",
            vec![(
                "GuidEquals {ba92f5b4-2d11-453d-a403-e96b0029c9fe}\n  AND\n  @Request",
                "GuidEquals {ba92f5b4-2d11-453d-a403-e96b0029c9fe, 0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3}\n  AND\n  @Request",
            )],
            vec![lacks("write", "the role-id restriction")],
        ),
        (
            "the worker may delete a user's assignment",
            vec![(
                "StringEqualsIgnoreCase {'ServicePrincipal'}\n  AND\n  @Resource",
                "StringEqualsIgnoreCase {'ServicePrincipal', 'User'}\n  AND\n  @Resource",
            )],
            vec![lacks("delete", "the ServicePrincipal restriction")],
        ),
    ];
    for (case, replacements, messages) in cases {
        let failed = bicep_check_on_a_copy(&replacements);
        assert_eq!(
            failed.status.code(),
            Some(1),
            "{case}: the check must fail\n{}",
            script_log(&failed)
        );
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains(&format!("bicep_check: {} problem(s):", messages.len())),
            "{case}: only the mutation may be reported\n{stderr}"
        );
        for message in messages {
            assert!(
                stderr.contains(&message),
                "{case}: no {message:?} in\n{stderr}"
            );
        }
    }
}

#[test]
fn service_bus_roles_are_scoped_to_the_queue_and_topic_never_the_namespace() {
    let file = "infra/modules/servicebus-roles.bicep";
    let text = read(file);
    let symbols: Vec<(String, String)> = blocks(&text, "resource")
        .into_iter()
        .map(|b| (b.symbol, b.target))
        .collect();
    let type_of = |symbol: &str| {
        symbols
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("scope {symbol} is not a resource of {file}"))
    };
    let assignments = resources_of(file, ROLE_ASSIGNMENT);
    assert_eq!(assignments.len(), 4, "{assignments:?}");
    let mut grants = BTreeSet::new();
    for a in &assignments {
        let scope = prop(&a.body, "scope").expect("every assignment names its scope");
        let scope_type = type_of(scope);
        assert!(
            scope_type == QUEUE || scope_type == TOPIC,
            "{} is scoped to {scope} ({scope_type})",
            a.symbol
        );
        let role = prop(&a.body, "roleDefinitionId").expect("role");
        let role = role
            .split("roles.")
            .nth(1)
            .and_then(|r| r.strip_suffix(')'))
            .expect("a role of the roles table");
        grants.insert((
            role.to_string(),
            scope_type,
            prop(&a.body, "principalId").map(str::to_string),
        ));
    }
    let worker = Some("workerPrincipalId".to_string());
    let expected: BTreeSet<_> = [
        ("serviceBusDataReceiver", QUEUE, worker.clone()),
        ("serviceBusDataSender", QUEUE, worker.clone()),
        ("serviceBusDataSender", TOPIC, worker),
        (
            "serviceBusDataOwner",
            QUEUE,
            Some("kedaPrincipalId".to_string()),
        ),
    ]
    .into_iter()
    .map(|(r, t, p)| (r.to_string(), t.to_string(), p))
    .collect();
    assert_eq!(grants, expected);
    assert!(text.contains("serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'"));
    assert!(text.contains("serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'"));
    assert!(text.contains("serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'"));
}

#[test]
fn journal_role_is_scoped_to_the_journal_table() {
    let file = "infra/modules/storage-roles.bicep";
    let journal = resources_of(file, ROLE_ASSIGNMENT)
        .into_iter()
        .find(|b| b.symbol == "workerWritesJournal")
        .expect("the table role assignment");
    assert_eq!(prop(&journal.body, "scope"), Some("journal"));
    let tables = resources_of(
        file,
        "Microsoft.Storage/storageAccounts/tableServices/tables",
    );
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].symbol, "journal");
    assert!(
        read(file).contains("storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'")
    );
}

#[test]
fn storage_account_refuses_shared_keys_public_blobs_and_old_tls() {
    let file = "infra/modules/storage.bicep";
    let accounts = resources_of(file, "Microsoft.Storage/storageAccounts");
    assert_eq!(accounts.len(), 1);
    let body = &accounts[0].body;
    assert_eq!(prop(body, "allowSharedKeyAccess"), Some("false"));
    assert_eq!(prop(body, "allowBlobPublicAccess"), Some("false"));
    assert_eq!(prop(body, "minimumTlsVersion"), Some("'TLS1_2'"));
    assert_eq!(prop(body, "supportsHttpsTrafficOnly"), Some("true"));
    assert_eq!(prop(body, "defaultToOAuthAuthentication"), Some("true"));
}

#[test]
fn agent_pool_role_allows_only_reading_the_cluster_and_managing_agent_pools() {
    let file = "infra/modules/cluster-roles.bicep";
    let definitions = resources_of(file, "Microsoft.Authorization/roleDefinitions");
    assert_eq!(definitions.len(), 1);
    let body = &definitions[0].body;
    let actions: BTreeSet<&str> = body
        .split("actions: [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("actions list")
        .lines()
        .map(|l| l.trim().trim_matches('\''))
        .filter(|l| !l.is_empty())
        .collect();
    let expected: BTreeSet<&str> = [
        "Microsoft.ContainerService/managedClusters/read",
        "Microsoft.ContainerService/managedClusters/agentPools/read",
        "Microsoft.ContainerService/managedClusters/agentPools/write",
        "Microsoft.ContainerService/managedClusters/agentPools/delete",
    ]
    .into();
    assert_eq!(actions, expected);
    for list in ["notActions: []", "dataActions: []", "notDataActions: []"] {
        assert!(body.contains(list), "{list}");
    }
    let assignment = &resources_of(file, ROLE_ASSIGNMENT)[0];
    assert_eq!(prop(&assignment.body, "scope"), Some("cluster"));
}

#[test]
fn managed_identity_contributor_is_granted_on_the_tenants_resource_group_only() {
    let text = read("infra/modules/tenants-rg-roles.bicep");
    assert!(
        text.contains("var managedIdentityContributor = 'e40ec5ca-96e0-45a2-b4ff-59039f2c2b59'")
    );
    let main = read("infra/main.bicep");
    let module = blocks(&main, "module")
        .into_iter()
        .find(|m| m.target == "modules/tenants-rg-roles.bicep")
        .expect("main.bicep deploys the tenants' role");
    assert_eq!(
        prop(&module.body, "scope"),
        Some("resourceGroup(tenantsResourceGroup)")
    );
}

#[test]
fn every_role_assignment_is_for_a_service_principal_with_a_deterministic_name() {
    let mut seen = 0;
    for (path, text) in bicep_files() {
        for a in blocks(&text, "resource")
            .into_iter()
            .filter(|b| b.target == ROLE_ASSIGNMENT)
        {
            seen += 1;
            assert_eq!(
                prop(&a.body, "principalType"),
                Some("'ServicePrincipal'"),
                "{path} {}",
                a.symbol
            );
            assert!(
                prop(&a.body, "name").is_some_and(|n| n.starts_with("guid(")),
                "{path} {}",
                a.symbol
            );
            // Role assignments take the subscription-level role id, for custom roles too.
            assert!(
                prop(&a.body, "roleDefinitionId").is_some_and(|r| r.starts_with(
                    "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                )),
                "{path} {}",
                a.symbol
            );
        }
    }
    assert_eq!(seen, 9, "role assignments across the templates");
}

#[test]
fn worker_identity_trusts_only_its_service_account_through_the_cluster_issuer() {
    let file = "infra/modules/identity.bicep";
    let fics = resources_of(
        file,
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
    );
    assert_eq!(fics.len(), 1);
    let body = &fics[0].body;
    assert_eq!(prop(body, "issuer"), Some("oidcIssuerUrl"));
    assert_eq!(prop(body, "subject"), Some("fic.subject"));
    assert!(body.contains("'api://AzureADTokenExchange'"));
    let main = read("infra/main.bicep");
    assert!(main.contains(
        "var workerSubject = 'system:serviceaccount:${workerNamespace}:${workerServiceAccount}'"
    ));
    assert!(main.contains("param workerNamespace string = 'tenant-onboarding'"));
    assert!(main.contains("param workerServiceAccount string = 'onboarding-worker'"));
}

#[test]
fn cross_tenant_template_federates_worker_and_keda_identities_with_the_cluster_issuer() {
    let text = read("infra/servicebus-tenant.bicep");
    let modules = blocks(&text, "module");
    let identities: Vec<&Block> = modules
        .iter()
        .filter(|m| m.target == "modules/identity.bicep")
        .collect();
    assert_eq!(identities.len(), 2);
    for m in &identities {
        assert_eq!(prop(&m.body, "oidcIssuerUrl"), Some("oidcIssuerUrl"));
    }
    assert!(
        text.contains(
            "subject: 'system:serviceaccount:${workerNamespace}:${workerServiceAccount}'"
        )
    );
    assert!(text.contains("subject: kedaOperatorSubject"));
    assert!(
        modules
            .iter()
            .any(|m| m.target == "modules/servicebus-roles.bicep")
    );
    assert!(text.contains("output entraTenantId string = tenant().tenantId"));
    // The cluster side skips its own namespace in that case.
    let main = read("infra/main.bicep");
    for symbol in ["serviceBus", "kedaIdentity", "serviceBusRoles"] {
        let m = blocks(&main, "module")
            .into_iter()
            .find(|m| m.symbol == symbol)
            .expect("module in main.bicep");
        assert!(
            main.contains(&format!(
                "module {symbol} '{}' = if (deployServiceBus) {{",
                m.target
            )),
            "{symbol} must depend on deployServiceBus"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rendered Kubernetes manifests.

fn worker_container(objects: &[Value]) -> &Value {
    let deployment = object(objects, "Deployment", "onboarding-worker");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

#[test]
fn worker_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    let objects = rendered("base");
    let pod = &object(&objects, "Deployment", "onboarding-worker")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = worker_container(&objects);
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_string()])
    );
    assert!(sc["capabilities"]["add"].is_null());
    // A writable /tmp comes from an emptyDir, nothing else is writable.
    let tmp = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("/tmp mount");
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == tmp["name"])
        .expect("the /tmp volume");
    assert!(volume["emptyDir"].is_mapping());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let namespace = object(&objects, "Namespace", "tenant-onboarding");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn worker_probes_use_the_named_port_8080_and_metrics_are_scraped_there() {
    let objects = rendered("base");
    let deployment = object(&objects, "Deployment", "onboarding-worker");
    let container = worker_container(&objects);
    let port = &container["ports"][0];
    assert_eq!(port["name"], "http");
    assert_eq!(port["containerPort"], Value::from(8080));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8080");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let args = strings(&container["args"]);
    assert!(args.contains("run"), "{args:?}");
    // KEDA owns the replica count.
    assert!(deployment["spec"]["replicas"].is_null());
}

#[test]
fn worker_pod_uses_workload_identity_through_its_service_account() {
    let objects = rendered("base");
    let deployment = object(&objects, "Deployment", "onboarding-worker");
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    let sa_name = text_at(
        &template["spec"]["serviceAccountName"],
        "serviceAccountName",
    );
    let sa = object(&objects, "ServiceAccount", sa_name);
    let client_id = text_at(
        &sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "client-id annotation",
    );
    assert_eq!(client_id.len(), 36, "{client_id} is not a GUID");
}

/// The ConfigMap's config.toml without the transport and journal sections, whose production
/// kinds (`service_bus`, `azure_table`) the worker's loader does not know yet.
fn config_without_transport_and_journal(config: &str) -> String {
    let mut keep = true;
    let mut out = String::new();
    for line in config.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let table = trimmed.trim_matches(|c| c == '[' || c == ']');
            keep = !(table == "transport"
                || table.starts_with("transport.")
                || table == "journal"
                || table.starts_with("journal."));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn config_toml(objects: &[Value]) -> String {
    text_at(
        &object(objects, "ConfigMap", "worker-config")["data"]["config.toml"],
        "config.toml",
    )
    .to_string()
}

fn load_config(objects: &[Value], name: &str) -> worker::config::Config {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("infra-config");
    fs::create_dir_all(&dir).expect("create config dir");
    let path = dir.join(format!("{name}.toml"));
    fs::write(
        &path,
        config_without_transport_and_journal(&config_toml(objects)),
    )
    .expect("write config");
    worker::config::Config::load(Some(&path), Vec::new())
        .unwrap_or_else(|e| panic!("the ConfigMap's config does not load: {e}"))
}

#[test]
fn production_config_loads_with_the_worker_loader_apart_from_the_assumed_transport_and_journal() {
    let objects = rendered("base");
    let config = load_config(&objects, "base");
    assert_eq!(config.default_target, "prod");
    let target = config.target(None).expect("the default target");
    assert_eq!(target.name, "prod");
    assert_eq!(target.arm_endpoint, "https://management.azure.com");
    assert!(target.oidc_issuer.starts_with("https://"));
    assert!(target.kubernetes.in_cluster);
    assert_eq!(target.kubernetes.server, None);
    match &target.credential {
        // The path is the webhook's to choose: it moved in v1.6.0 and carries a per-pod segment.
        worker::config::CredentialConfig::WorkloadIdentity(s) => assert_eq!(s.token_file, None),
        other => panic!("the production target must use workload identity, not {other:?}"),
    }
}

#[test]
fn the_production_config_takes_its_token_file_from_the_webhooks_environment_variable() {
    let objects = rendered("base");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("infra-config");
    fs::create_dir_all(&dir).expect("create config dir");
    let path = dir.join("webhook-env.toml");
    fs::write(
        &path,
        config_without_transport_and_journal(&config_toml(&objects)),
    )
    .expect("write config");
    let projected = "/var/run/secrets/azure/tokens/pod-7f9c/azure-identity-token";
    let config = worker::config::Config::load(
        Some(&path),
        vec![(
            "AZURE_FEDERATED_TOKEN_FILE".to_string(),
            projected.to_string(),
        )],
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's config does not load: {e}"));
    match &config.target(None).expect("the default target").credential {
        worker::config::CredentialConfig::WorkloadIdentity(s) => {
            assert_eq!(s.token_file.as_deref(), Some(Path::new(projected)))
        }
        other => panic!("the production target must use workload identity, not {other:?}"),
    }
}

#[test]
fn transport_and_journal_use_the_assumed_service_bus_and_azure_table_keys() {
    let objects = rendered("base");
    let config = config_toml(&objects);
    let section = |name: &str| -> Vec<(String, String)> {
        let header = format!("[{name}]");
        config
            .split(&header)
            .nth(1)
            .unwrap_or_else(|| panic!("no {header}"))
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').expect("key = value");
                (k.trim().to_string(), v.trim().trim_matches('"').to_string())
            })
            .collect()
    };
    fn keys(pairs: &[(String, String)]) -> BTreeSet<&str> {
        pairs.iter().map(|(k, _)| k.as_str()).collect()
    }
    let transport = section("transport");
    assert_eq!(
        keys(&transport),
        BTreeSet::from(["kind", "namespace", "queue", "topic", "subscription"])
    );
    assert!(transport.contains(&("kind".into(), "service_bus".into())));
    let namespace = &transport
        .iter()
        .find(|(k, _)| k == "namespace")
        .expect("namespace")
        .1;
    assert!(
        namespace.ends_with(".servicebus.windows.net"),
        "{namespace}"
    );
    let journal = section("journal");
    assert_eq!(
        keys(&journal),
        BTreeSet::from(["kind", "endpoint", "table"])
    );
    assert!(journal.contains(&("kind".into(), "azure_table".into())));
    for credential in ["transport.credential", "journal.credential"] {
        let pairs = section(credential);
        assert_eq!(
            keys(&pairs),
            BTreeSet::from(["kind", "tenant_id", "client_id"])
        );
        assert!(pairs.contains(&("kind".into(), "workload_identity".into())));
    }
}

#[test]
fn termination_grace_outlasts_the_message_budget_plus_the_shutdown_grace() {
    let objects = rendered("base");
    let config = load_config(&objects, "grace");
    let deployment = object(&objects, "Deployment", "onboarding-worker");
    let grace_secs = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let needed_ms = config.saga.message_budget_ms + config.worker.shutdown_grace_ms;
    assert!(
        grace_secs * 1000 > needed_ms,
        "terminationGracePeriodSeconds {grace_secs} s must exceed budget + shutdown grace ({needed_ms} ms)"
    );
}

#[test]
fn worker_cluster_role_has_exactly_the_verbs_the_provider_uses() {
    let objects = rendered("base");
    let role = object(&objects, "ClusterRole", "onboarding-worker");
    let mut granted = BTreeSet::new();
    let mut binds = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        if strings(&rule["verbs"]) == BTreeSet::from(["bind".to_string()]) {
            binds.push((strings(&rule["resources"]), strings(&rule["resourceNames"])));
            continue;
        }
        assert_eq!(
            strings(&rule["verbs"]),
            BTreeSet::from(["get", "create", "patch", "delete"].map(String::from))
        );
        for resource in strings(&rule["resources"]) {
            granted.insert(resource);
        }
    }
    let expected = [
        "namespaces",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "networkpolicies",
        "ciliumnetworkpolicies",
        "rolebindings",
        "deployments",
    ]
    .map(String::from);
    assert_eq!(
        granted,
        BTreeSet::from(expected),
        "no roles: the worker writes none"
    );
    // `bind` on exactly one ClusterRole, by name: what the tenant admins' RoleBinding grants.
    assert_eq!(
        binds,
        vec![(
            BTreeSet::from(["clusterroles".to_string()]),
            BTreeSet::from(["tenant-onboarding:tenant-admin".to_string()])
        )]
    );
}

#[test]
fn the_verifier_role_only_reads_and_asks_access_reviews() {
    let objects = rendered("base");
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "ClusterRole" && o["metadata"]["name"] == "tenant-onboarding:verifier"
        })
        .expect("the verifier ClusterRole");
    for rule in role["rules"].as_sequence().expect("rules") {
        let verbs = strings(&rule["verbs"]);
        let resources = strings(&rule["resources"]);
        if resources.contains("subjectaccessreviews") {
            assert_eq!(verbs, BTreeSet::from(["create".to_string()]));
        } else {
            assert!(
                verbs.iter().all(|v| v == "get" || v == "list"),
                "{resources:?}: {verbs:?}"
            );
        }
    }
    // Not bound to the worker by default: only [drift] (off by default) has it verify, and
    // docs/deploy.md says to bind it then.
    assert!(!objects.iter().any(|o| o["kind"] == "ClusterRoleBinding"
        && o["roleRef"]["name"] == "tenant-onboarding:verifier"));
}

#[test]
fn no_cluster_role_grants_escalate_impersonate_wildcards_or_unnamed_bind() {
    let objects = rendered("base");
    let roles: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .collect();
    // The worker's, the tenant admins', and the verifier's (read-only, bound by operators).
    assert_eq!(roles.len(), 3);
    for role in roles {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        for rule in role["rules"].as_sequence().expect("rules") {
            let verbs = strings(&rule["verbs"]);
            for forbidden in ["escalate", "impersonate", "*"] {
                assert!(!verbs.contains(forbidden), "{name}");
            }
            if verbs.contains("bind") {
                assert!(
                    !strings(&rule["resourceNames"]).is_empty(),
                    "{name}: bind by name only"
                );
            }
            let resources = strings(&rule["resources"]);
            assert!(!resources.contains("*"), "{name}");
            // The worker holds no secrets; tenant admins may manage their own namespace's.
            if name == "onboarding-worker" {
                assert!(!resources.contains("secrets"), "{name}");
            }
        }
    }
    // Only the worker is bound cluster-wide, and only to its own role: the tenant admins'
    // ClusterRole is granted inside tenant namespaces alone.
    for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding") {
        assert_eq!(binding["subjects"][0]["name"], "onboarding-worker");
        assert_eq!(binding["roleRef"]["name"], "onboarding-worker");
    }
}

#[test]
fn keda_scales_the_worker_from_zero_on_the_commands_queue_with_workload_identity() {
    let objects = rendered("base");
    let scaled = object(&objects, "ScaledObject", "onboarding-worker");
    let spec = &scaled["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "onboarding-worker");
    assert_eq!(spec["minReplicaCount"], Value::from(0));
    assert!(spec["maxReplicaCount"].as_u64().is_some_and(|n| n >= 2));
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["type"], "azure-servicebus");
    assert_eq!(trigger["metadata"]["queueName"], "tenant-commands");
    assert!(trigger["metadata"]["namespace"].is_string());
    assert!(trigger["metadata"]["messageCount"].is_string());
    let auth_name = text_at(&trigger["authenticationRef"]["name"], "authenticationRef");
    let auth = object(&objects, "TriggerAuthentication", auth_name);
    let identity = &auth["spec"]["podIdentity"];
    assert_eq!(identity["provider"], "azure-workload");
    assert!(identity["identityId"].is_string());
    assert!(identity["identityTenantId"].is_string());
    assert!(auth["spec"]["secretTargetRef"].is_null());
}

#[test]
fn cross_tenant_overlay_moves_only_service_bus_and_keda_to_the_other_entra_tenant() {
    let base = rendered("base");
    let overlay = rendered("cross-tenant");
    let base_auth = &object(
        &base,
        "TriggerAuthentication",
        "onboarding-worker-servicebus",
    )["spec"]["podIdentity"];
    let auth = &object(
        &overlay,
        "TriggerAuthentication",
        "onboarding-worker-servicebus",
    )["spec"]["podIdentity"];
    assert_ne!(auth["identityTenantId"], base_auth["identityTenantId"]);
    assert_ne!(auth["identityId"], base_auth["identityId"]);
    let env: Vec<(String, String)> = worker_container(&overlay)["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            (
                text_at(&e["name"], "env name").to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("overlay sets no {name}"))
    };
    assert_eq!(
        value("ONBOARD__TRANSPORT__CREDENTIAL__TENANT_ID"),
        text_at(&auth["identityTenantId"], "identityTenantId"),
        "the worker and KEDA sign in to the same (Service Bus) tenant"
    );
    let namespace = value("ONBOARD__TRANSPORT__NAMESPACE");
    let scaled = object(&overlay, "ScaledObject", "onboarding-worker");
    assert_eq!(
        namespace.split('.').next(),
        scaled["spec"]["triggers"][0]["metadata"]["namespace"].as_str()
    );
    // ARM and the journal stay on the cluster tenant's identity: the ConfigMap is untouched.
    assert_eq!(config_toml(&overlay), config_toml(&base));
    assert_eq!(
        object(&overlay, "ServiceAccount", "onboarding-worker"),
        object(&base, "ServiceAccount", "onboarding-worker")
    );
}

#[test]
fn python_renderer_refuses_kustomize_features_it_does_not_implement() {
    // Build the venv first (the check script does), so this test does not race it.
    let check = check_run();
    let python = repo().join(".local/venv/bin/python");
    assert!(python.exists(), "no venv:\n{}", script_log(&check.output));
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: []\nnamespace: elsewhere\ncommonLabels: {a: b}\n",
    )
    .expect("write kustomization");
    let output = Command::new(&python)
        .arg(repo().join("infra/checks/render_k8s.py"))
        .arg(dir.path())
        .output()
        .expect("run render_k8s.py");
    assert_eq!(output.status.code(), Some(1), "{}", script_log(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("uses commonLabels, namespace, which this renderer does not implement"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile.

/// (instruction, arguments), continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines().map(str::trim) {
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .iter()
        .filter_map(|l| {
            let (op, rest) = l.split_once(' ')?;
            Some((op.to_uppercase(), rest.trim().to_string()))
        })
        .collect()
}

#[test]
fn dockerfile_builds_in_a_rust_stage_and_runs_the_worker_from_a_non_root_runtime_stage() {
    let instructions = dockerfile_instructions();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].starts_with("rust:1.95-bookworm AS "),
        "{}",
        froms[0]
    );
    let runtime = froms.last().expect("a runtime stage");
    assert!(runtime.starts_with("gcr.io/distroless/"), "{runtime}");
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("FROM");
    let runtime_stage = &instructions[last_from..];
    let user = runtime_stage
        .iter()
        .find(|(op, _)| op == "USER")
        .map(|(_, a)| a.as_str())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER must be a numeric non-root uid, got {user}"
    );
    assert!(
        runtime_stage
            .iter()
            .any(|(op, a)| op == "COPY" && a.starts_with("--from=") && a.ends_with(" /worker"))
    );
    assert!(runtime_stage.contains(&("ENTRYPOINT".into(), "[\"/worker\"]".into())));
    assert!(runtime_stage.contains(&("CMD".into(), "[\"run\"]".into())));
    let build = instructions
        .iter()
        .find(|(op, a)| op == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.as_str())
        .expect("a RUN with cargo build");
    assert!(
        build.contains("--locked") && build.contains("-p worker"),
        "{build}"
    );
}

#[test]
fn dockerfile_fetches_nothing_with_add_and_keeps_local_state_out_of_the_context() {
    for (op, args) in dockerfile_instructions() {
        assert!(
            !(op == "ADD" && (args.contains("http://") || args.contains("https://"))),
            "ADD {args}"
        );
    }
    let ignore = read(".dockerignore");
    for entry in [".git", "target", ".local"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// infra/deploy.sh against stand-in az and kubectl that log their calls.

const FAKE_AZ: &str = r#"#!/usr/bin/env bash
echo "az $*" >> "$FAKE_LOG"
args="$*"
case "$args" in
  "account show --query id -o tsv") echo 00000000-0000-0000-0000-000000000001 ;;
  *"account show --subscription"*"--query tenantId"*) echo bbbbbbbb-0000-0000-0000-00000000000b ;;
  *"aks show"*"oidcIssuerProfile.issuerUrl"*) echo "https://westeurope.oic.prod-aks.azure.com/aaaa/cccc/" ;;
  *"aks show"*"--query id"*) echo "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks" ;;
  *"group exists"*) echo true ;;
  *"deployment group show"*)
    remote=false
    case "$args" in *"-n onboard-servicebus"*) remote=true ;; esac
    name=$(sed -n 's/.*properties\.outputs\.\([A-Za-z]*\)\.value.*/\1/p' <<<"$args")
    case "$name" in
      entraTenantId) if $remote; then echo bbbbbbbb-0000-0000-0000-00000000000b; else echo aaaaaaaa-0000-0000-0000-00000000000a; fi ;;
      workerClientId) if $remote; then echo 44444444-0000-0000-0000-000000000000; else echo 11111111-0000-0000-0000-000000000000; fi ;;
      workerPrincipalId) echo 22222222-0000-0000-0000-000000000000 ;;
      kedaClientId) echo 33333333-0000-0000-0000-000000000000 ;;
      storageAccountName) echo stonboardabc ;;
      tableEndpoint) echo https://stonboardabc.table.core.windows.net/ ;;
      journalTableName) echo sagajournal ;;
      serviceBusNamespace) echo sb-onboard-abc ;;
      serviceBusFullyQualifiedNamespace) echo sb-onboard-abc.servicebus.windows.net ;;
      queueName) echo tenant-commands ;;
      topicName) echo tenant-events ;;
      subscriptionName) echo operators ;;
    esac ;;
esac
exit 0
"#;

// Renders what it would apply or diff with the project's renderer, into $FAKE_RENDER.
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
echo "kubectl $*" >> "$FAKE_LOG"
case "$1" in
  get) exit 0 ;;
  kustomize) exec "$RENDER_PY" "$RENDERER" "$2" ;;
  diff) "$RENDER_PY" "$RENDERER" "$3" > "$FAKE_RENDER" || exit 2; exit 1 ;;
  apply) "$RENDER_PY" "$RENDERER" "$3" > "$FAKE_RENDER" || exit 2; exit 0 ;;
esac
exit 0
"#;

struct DeployRun {
    output: Output,
    log: String,
    render: Option<String>,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

fn deploy(args: &[&str], env: &[(&str, &str)]) -> DeployRun {
    // The venv (PyYAML for the renderer) is built by the check script.
    let check = check_run();
    let python = repo().join(".local/venv/bin/python");
    assert!(
        python.exists(),
        "no venv; check-infra.sh said:\n{}",
        script_log(&check.output)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    for (name, body) in [("az", FAKE_AZ), ("kubectl", FAKE_KUBECTL)] {
        let path = bin.join(name);
        fs::write(&path, body).expect("write stand-in");
        let status = Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .expect("chmod");
        assert!(status.success());
    }
    let log = dir.path().join("calls.log");
    let render = dir.path().join("render.yaml");
    let state = dir.path().join("state");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg(repo().join("infra/deploy.sh"))
        .args(args)
        .current_dir(repo())
        .env("PATH", path)
        .env("FAKE_LOG", &log)
        .env("FAKE_RENDER", &render)
        .env("RENDER_PY", &python)
        .env("RENDERER", repo().join("infra/checks/render_k8s.py"))
        .env("ONBOARD_STATE_DIR", &state);
    for var in [
        "ONBOARD_SUBSCRIPTION",
        "ONBOARD_SERVICEBUS_TENANT_ID",
        "ONBOARD_SERVICEBUS_SUBSCRIPTION",
        "ONBOARD_SERVICEBUS_RESOURCE_GROUP",
        "ONBOARD_PREFIX",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run infra/deploy.sh");
    DeployRun {
        log: fs::read_to_string(&log).unwrap_or_default(),
        render: fs::read_to_string(&render).ok(),
        output,
        state,
        _dir: dir,
    }
}

const DEPLOY_ENV: [(&str, &str); 4] = [
    ("ONBOARD_RESOURCE_GROUP", "rg-onboard"),
    ("ONBOARD_LOCATION", "westeurope"),
    ("ONBOARD_AKS_NAME", "aks-onboard"),
    ("ONBOARD_IMAGE", "myacr.azurecr.io/onboarding-worker:1.2.3"),
];

#[test]
fn deploy_script_is_strict_and_without_a_step_prints_its_usage_and_fails() {
    let text = read("infra/deploy.sh");
    assert!(text.contains("set -euo pipefail"));
    let run = deploy(&[], &[]);
    assert_eq!(
        run.output.status.code(),
        Some(2),
        "{}",
        script_log(&run.output)
    );
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("usage: infra/deploy.sh [--what-if] STEP"),
        "{stderr}"
    );
    assert!(stderr.contains("ONBOARD_RESOURCE_GROUP"), "{stderr}");
    assert!(run.log.is_empty(), "nothing may be called: {}", run.log);
}

#[test]
fn deploy_script_names_every_missing_setting() {
    let run = deploy(&["all"], &[("ONBOARD_RESOURCE_GROUP", "rg")]);
    assert_eq!(run.output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("deploy: set ONBOARD_LOCATION ONBOARD_AKS_NAME ONBOARD_IMAGE"),
        "{stderr}"
    );
}

#[test]
fn deploy_script_in_what_if_mode_previews_and_changes_nothing() {
    let run = deploy(&["--what-if", "all"], &DEPLOY_ENV);
    assert!(run.output.status.success(), "{}", script_log(&run.output));
    assert!(
        run.log.contains("az deployment group what-if"),
        "{}",
        run.log
    );
    assert!(run.log.contains("kubectl diff -k"), "{}", run.log);
    for change in [
        "deployment group create",
        "group create",
        "kubectl apply",
        "delete",
    ] {
        assert!(
            !run.log.contains(change),
            "what-if ran `{change}`:\n{}",
            run.log
        );
    }
}

#[test]
fn deploy_script_applies_an_overlay_carrying_the_deployment_outputs() {
    let run = deploy(&["all"], &DEPLOY_ENV);
    assert!(run.output.status.success(), "{}", script_log(&run.output));
    assert!(run.log.contains("--template-file"), "{}", run.log);
    assert!(run.log.contains("deployServiceBus=true"), "{}", run.log);
    assert!(
        run.log
            .contains("oidcIssuerUrl=https://westeurope.oic.prod-aks.azure.com/aaaa/cccc/")
    );
    assert!(run.log.contains("az aks get-credentials"));
    assert!(run.log.contains("kubectl apply -k"));
    let render = run
        .render
        .as_deref()
        .expect("kubectl apply rendered the overlay");
    let objects = documents(render);
    assert_eq!(
        worker_container(&objects)["image"],
        "myacr.azurecr.io/onboarding-worker:1.2.3"
    );
    assert_eq!(
        object(&objects, "ServiceAccount", "onboarding-worker")["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "11111111-0000-0000-0000-000000000000"
    );
    let auth = &object(
        &objects,
        "TriggerAuthentication",
        "onboarding-worker-servicebus",
    )["spec"]["podIdentity"];
    assert_eq!(auth["identityId"], "33333333-0000-0000-0000-000000000000");
    let scaled = object(&objects, "ScaledObject", "onboarding-worker");
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["namespace"],
        "sb-onboard-abc"
    );
    let config = config_toml(&objects);
    assert!(config.contains("namespace = \"sb-onboard-abc.servicebus.windows.net\""));
    assert!(config.contains("storage_account = \"stonboardabc\""));
    assert!(config.contains("resource_group = \"rg-onboard-tenants\""));
    let loaded = load_config(&objects, "deployed");
    assert_eq!(
        loaded.target(None).map(|t| t.cluster_name.as_str()),
        Some("aks-onboard")
    );
    assert!(run.state.join("k8s/kustomization.yaml").is_file());
}

#[test]
fn deploy_script_with_a_remote_service_bus_signs_the_worker_in_to_that_tenant() {
    let mut env = DEPLOY_ENV.to_vec();
    env.extend([
        (
            "ONBOARD_SERVICEBUS_TENANT_ID",
            "bbbbbbbb-0000-0000-0000-00000000000b",
        ),
        ("ONBOARD_SERVICEBUS_SUBSCRIPTION", "sub-b"),
        ("ONBOARD_SERVICEBUS_RESOURCE_GROUP", "rg-sb"),
    ]);
    let run = deploy(&["all"], &env);
    assert!(run.output.status.success(), "{}", script_log(&run.output));
    assert!(
        run.log
            .contains("--subscription sub-b -g rg-sb -n onboard-servicebus --template-file")
    );
    assert!(run.log.contains("deployServiceBus=false"));
    let render = run.render.as_deref().expect("rendered");
    let objects = documents(render);
    let config = config_toml(&objects);
    let transport = config
        .split("[transport.credential]")
        .nth(1)
        .and_then(|s| s.split('[').next())
        .expect("transport credential");
    assert!(
        transport.contains("tenant_id = \"bbbbbbbb-0000-0000-0000-00000000000b\""),
        "{transport}"
    );
    assert!(
        transport.contains("client_id = \"44444444-0000-0000-0000-000000000000\""),
        "{transport}"
    );
    let auth = &object(
        &objects,
        "TriggerAuthentication",
        "onboarding-worker-servicebus",
    )["spec"]["podIdentity"];
    assert_eq!(
        auth["identityTenantId"],
        "bbbbbbbb-0000-0000-0000-00000000000b"
    );
    // ARM stays in the cluster's tenant.
    let loaded = load_config(&objects, "remote");
    assert_eq!(
        loaded
            .target(None)
            .map(|t| t.identity_entra_tenant_id.as_str()),
        Some("aaaaaaaa-0000-0000-0000-00000000000a")
    );
}
