//! `send` and `offboard`: build a command (from flags or a file), validate it exactly as the
//! worker will, put it on the queue (MessageId = request id, SessionId = tenant id), and with
//! `--wait` follow it to its outcome. `send --raw` puts bytes on the queue as they are.
//!
//! How `--wait` follows a request without taking events meant for another reader is in
//! [`crate::follow`].
//!
//! May touch: the queue and topic the configuration names, and (reading only) its journal and
//! dead-letter queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use onboarding_config::Config;
use onboarding_contract::commands::{NodePoolRequest, QuotaRequest, WorkloadRequest};
use onboarding_contract::events::CloudEvent;
use onboarding_contract::validate::ValidationContext;
use onboarding_contract::{Command, OffboardTenant, OnboardTenant, parse_command};
use onboarding_core::SystemClock;
use onboarding_record::{RequestEntry, Reuse, TenantRecord, request_key};
use onboarding_transport::envelope;
use onboarding_transport::{OutgoingMessage, Queue, SendOutcome};
use serde_json::json;

use crate::follow::{Followed, Follower, conclude, describe, follow, follow_journal, follower_for};
use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_INVALID, Failure};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The tenant id (3-40 lowercase letters, digits and single hyphens).
    #[arg(long, required_unless_present_any = ["file", "raw"])]
    tenant: Option<String>,
    /// Idempotency key; a new UUID when omitted. Sending the same id again changes nothing.
    #[arg(long)]
    request_id: Option<String>,
    /// A configured provisioning target (default: the worker's default target).
    #[arg(long)]
    target: Option<String>,
    /// VM size of the tenant's node pool.
    #[arg(long, default_value = "Standard_D4s_v5")]
    vm_size: String,
    /// Fixed node count (default 1), or use --min-count and --max-count for autoscaling.
    #[arg(long, conflicts_with_all = ["min_count", "max_count"])]
    count: Option<u32>,
    #[arg(long, requires = "max_count")]
    min_count: Option<u32>,
    #[arg(long, requires = "min_count")]
    max_count: Option<u32>,
    /// Availability zones, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Namespace quota: CPU, memory and pods (all three, or the worker's defaults).
    #[arg(long, requires_all = ["quota_memory", "quota_pods"])]
    quota_cpu: Option<String>,
    #[arg(long, requires_all = ["quota_cpu", "quota_pods"])]
    quota_memory: Option<String>,
    #[arg(long, requires_all = ["quota_cpu", "quota_memory"])]
    quota_pods: Option<u32>,
    /// Object id of the Entra group that administers the tenant's namespace.
    #[arg(long)]
    admin_group: Option<String>,
    /// Deploy the tenant workload from the worker's template with this many replicas.
    #[arg(long)]
    workload: Option<u32>,
    /// Read the whole command (JSON) from this file instead of flags ('-' for stdin).
    #[arg(long, conflicts_with = "raw")]
    file: Option<PathBuf>,
    /// Put this file's bytes on the queue unvalidated (to test bad input, or resend a repaired
    /// message). The SessionId is --tenant, else the body's tenantId, else "raw".
    #[arg(long)]
    pub(crate) raw: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct OffboardArgs {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    request_id: Option<String>,
    #[arg(long)]
    target: Option<String>,
    /// Also delete the tenant's blob container (its data). Irreversible.
    #[arg(long)]
    purge_data: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Follow the request's progress events until its outcome.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout: u64,
}

pub(crate) fn validation(config: &Config) -> ValidationContext {
    ValidationContext {
        max_message_bytes: config.worker.max_message_bytes,
        targets: config.targets.keys().cloned().collect(),
        workload_template: config.workload_template().is_some(),
        reserved_namespaces: config.worker.reserved_namespaces.iter().cloned().collect(),
    }
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh W3C trace context, so the worker's spans join this request's trace.
fn message_for(command: &Command, body: Vec<u8>) -> OutgoingMessage {
    envelope::command_message_with_body(command, body, Some(&envelope::new_traceparent()))
}

pub async fn send(config: &Config, out: &Output, args: SendArgs) -> Result<(), Failure> {
    if let Some(path) = &args.raw {
        return send_raw(config, out, path, args.tenant.as_deref()).await;
    }
    let body = onboard_body(&args)?;
    let command = parse_body(config, &body)?;
    submit(config, out, command, body, &args.wait).await
}

pub async fn offboard(config: &Config, out: &Output, args: OffboardArgs) -> Result<(), Failure> {
    let body = offboard_body(&args);
    let command = parse_command(&body, &validation(config))
        .map_err(|r| Failure::new(EXIT_INVALID, format!("the request is invalid: {r}")))?;
    submit(config, out, command, body, &args.wait).await
}

/// The onboarding `args` describe, as the JSON body sent: the file's bytes, or built from flags.
pub(crate) fn onboard_body(args: &SendArgs) -> Result<Vec<u8>, Failure> {
    Ok(match &args.file {
        Some(path) => read_input(path)?,
        None => {
            let tenant = args.tenant.clone().unwrap_or_default();
            let mut c = OnboardTenant::new(
                args.request_id.clone().unwrap_or_else(new_request_id),
                tenant,
            );
            c.target = args.target.clone();
            c.node_pool = NodePoolRequest {
                vm_size: args.vm_size.clone(),
                count: if args.min_count.is_some() {
                    None
                } else {
                    Some(args.count.unwrap_or(1))
                },
                min_count: args.min_count,
                max_count: args.max_count,
                zones: args.zones.clone(),
            };
            if let (Some(cpu), Some(memory), Some(pods)) = (
                args.quota_cpu.clone(),
                args.quota_memory.clone(),
                args.quota_pods,
            ) {
                c.quota = Some(QuotaRequest { cpu, memory, pods });
            }
            c.admin_group_id = args.admin_group.clone();
            c.workload = args.workload.map(|replicas| WorkloadRequest { replicas });
            Command::Onboard(c).to_json()
        }
    })
}

/// The body parsed and validated exactly as the worker will; invalid input is exit 2.
pub(crate) fn parse_body(config: &Config, body: &[u8]) -> Result<Command, Failure> {
    parse_command(body, &validation(config)).map_err(|r| {
        Failure::new(
            EXIT_INVALID,
            format!(
                "the request is invalid ({}), nothing was sent:\n{}",
                r.reason.code(),
                r.errors
                    .iter()
                    .map(|e| format!(
                        "  {}: {}",
                        if e.path.is_empty() { "(body)" } else { &e.path },
                        e.message
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        )
    })
}

/// The offboarding `args` describe, as the JSON body sent.
pub(crate) fn offboard_body(args: &OffboardArgs) -> Vec<u8> {
    let mut c = OffboardTenant::new(
        args.request_id.clone().unwrap_or_else(new_request_id),
        args.tenant.clone(),
    );
    c.target = args.target.clone();
    c.purge_data = args.purge_data;
    Command::Offboard(c).to_json()
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path)
        .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read {}: {e}", path.display())))
}

pub(crate) async fn submit(
    config: &Config,
    out: &Output,
    command: Command,
    body: Vec<u8>,
    wait: &WaitArgs,
) -> Result<(), Failure> {
    if let Some(reuse) = registered_reuse(config, &command).await {
        return Err(Failure::new(
            EXIT_INVALID,
            format!("nothing was sent: {}", reuse.describe(command.request_id())),
        ));
    }
    let (queue, topic) = onboarding_bootstrap::open_transport(config, Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
    // Chosen (and subscribed) before sending so no event can slip past.
    let follower = match wait.wait {
        true => Some(follower_for(config, topic.as_ref(), command.tenant_id()).await?),
        false => None,
    };
    let own_subscription = match &follower {
        Some(Follower::Events {
            name, own: true, ..
        }) => Some(name.clone()),
        _ => None,
    };
    let result = send_and_follow(config, out, queue.as_ref(), command, body, wait, follower).await;
    // A subscription this run made for itself (on the embedded topic) goes with it: left
    // behind, it would hold every later event. Service Bus subscriptions are the
    // infrastructure's.
    if let Some(name) = &own_subscription
        && let Err(e) = topic.unsubscribe(name).await
    {
        eprintln!("producer: could not remove its events subscription {name}: {e}");
    }
    result
}

/// Send the command, then (with a follower) follow it to its outcome.
async fn send_and_follow(
    config: &Config,
    out: &Output,
    queue: &dyn Queue,
    command: Command,
    body: Vec<u8>,
    wait: &WaitArgs,
    follower: Option<Follower>,
) -> Result<(), Failure> {
    let outcome = queue.send(message_for(&command, body)).await.map_err(|e| {
        Failure::new(
            exit_for(&e),
            format!("sending {} failed: {e}", command.request_id()),
        )
    })?;
    let duplicate = outcome == SendOutcome::Duplicate;
    out.emit(
        &json!({"requestId": command.request_id(), "tenantId": command.tenant_id(), "kind": command.kind(), "duplicate": duplicate}),
        || {
            let mut s = format!("{} {} for tenant {} sent: request id {}", command.kind(), if duplicate { "(duplicate, dropped by the queue)" } else { "" }, command.tenant_id(), command.request_id());
            s = s.replace("  ", " ");
            s
        },
    );
    let Some(follower) = follower else {
        return Ok(());
    };
    // A resend of a request that already finished (dropped by the queue's duplicate detection,
    // or answered by the worker from its record) gets no new events worth waiting for: the
    // journal has the outcome.
    if let Some(event) = finished_outcome(config, &command).await {
        out.emit(&event, || {
            format!(
                "  request {} had already finished; its outcome, from the journal:\n{}",
                command.request_id(),
                describe(&event, 0.0)
            )
        });
        return conclude(&event);
    }
    let timeout = Duration::from_secs(wait.timeout);
    match follower {
        Follower::Events { subscription, .. } => {
            follow(out, subscription, command.request_id(), timeout).await
        }
        Follower::Journal(journal) => {
            let request = Followed {
                tenant: command.tenant_id(),
                request_id: command.request_id(),
            };
            follow_journal(out, journal.as_ref(), queue, request, timeout).await
        }
    }
}

/// How the command misuses a request id the worker has registered already (for another tenant
/// or another body): the queue would drop it as a duplicate, or the worker refuse it. Best
/// effort: a journal this producer cannot read leaves the check to the worker.
async fn registered_reuse(config: &Config, command: &Command) -> Option<Reuse> {
    let journal = crate::stores::existing_journal(config).ok()?;
    let stored = journal
        .load(&request_key(command.request_id()))
        .await
        .ok()??;
    let entry: RequestEntry = serde_json::from_value(stored.value).ok()?;
    entry.reuse_by(command)
}

/// The outcome event the journal holds for this request, if it finished. Best effort: a
/// journal this producer cannot read means following the events instead.
async fn finished_outcome(config: &Config, command: &Command) -> Option<CloudEvent> {
    let journal = crate::stores::existing_journal(config).ok()?;
    let stored = journal.load(command.tenant_id()).await.ok()??;
    let record: TenantRecord = serde_json::from_value(stored.value).ok()?;
    record.finished_event(command.request_id()).cloned()
}

async fn send_raw(
    config: &Config,
    out: &Output,
    path: &PathBuf,
    tenant: Option<&str>,
) -> Result<(), Failure> {
    let body = read_input(path)?;
    let body_tenant = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("tenantId")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .filter(|t| t.len() <= 128);
    let session = tenant
        .map(str::to_string)
        .or(body_tenant)
        .unwrap_or_else(|| "raw".into());
    let message_id = format!("raw-{}", uuid::Uuid::new_v4());
    let (queue, _) = onboarding_bootstrap::open_transport(config, Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
    let size = body.len();
    queue
        .send(OutgoingMessage {
            message_id: message_id.clone(),
            session_id: Some(session.clone()),
            content_type: Some("application/json".into()),
            body,
            ..OutgoingMessage::default()
        })
        .await
        .map_err(|e| Failure::new(exit_for(&e), format!("sending raw bytes failed: {e}")))?;
    out.emit(
        &json!({"messageId": message_id, "sessionId": session, "bytes": size}),
        || format!("{size} raw bytes sent unvalidated as message {message_id} (session {session})"),
    );
    Ok(())
}

/// A send the transport refused as such (too large, say) is invalid input (2): nothing was
/// sent. Anything else is a failure to send (1).
fn exit_for(e: &onboarding_transport::TransportError) -> u8 {
    match onboarding_core::Classify::class(e) {
        onboarding_core::ErrorClass::InvalidInput => EXIT_INVALID,
        _ => EXIT_FAILED,
    }
}
