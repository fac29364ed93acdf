//! `dlq list|show|replay|purge`: the dead-letter queue. Replay keeps body, session and
//! application properties, gives the copy a new MessageId, and removes the original only after
//! the resend succeeded.

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use onboarding_config::Config;
use onboarding_core::SystemClock;
use onboarding_transport::{OutgoingMessage, Queue, ReceivedMessage};
use serde_json::json;

use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, Failure};

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead-lettered messages with their reasons.
    List {
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// Show one dead-lettered message in full (by sequence number).
    Show { sequence: i64 },
    /// Send dead-lettered messages back to the queue (one by sequence number, or --all).
    Replay {
        #[arg(required_unless_present = "all")]
        sequence: Option<i64>,
        #[arg(long, conflicts_with = "sequence")]
        all: bool,
    },
    /// Delete every dead-lettered message. Needs --yes.
    Purge {
        #[arg(long)]
        yes: bool,
    },
}

fn view(m: &ReceivedMessage) -> serde_json::Value {
    let body = serde_json::from_slice::<serde_json::Value>(&m.body)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&m.body)));
    json!({
        "sequenceNumber": m.sequence_number,
        "messageId": m.message_id,
        "sessionId": m.session_id,
        "enqueuedTime": m.enqueued_time,
        "deliveryCount": m.delivery_count,
        "deadLetterReason": m.dead_letter_reason,
        "deadLetterDescription": m.dead_letter_description,
        "applicationProperties": m.application_properties,
        "body": body,
    })
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn run(config: &Config, out: &Output, action: DlqAction) -> Result<(), Failure> {
    let (queue, _) = onboarding_bootstrap::open_transport(config, Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
    match action {
        DlqAction::List { max } => {
            let items = peek_all(queue.as_ref(), max).await?;
            let json: Vec<_> = items.iter().map(view).collect();
            out.emit(&json, || {
                if items.is_empty() {
                    return "the dead-letter queue is empty".into();
                }
                let mut s = format!(
                    "{:>6}  {:<40} {:<26} {}\n",
                    "seq", "message id", "reason", "description"
                );
                for m in &items {
                    s.push_str(&format!(
                        "{:>6}  {:<40} {:<26} {}\n",
                        m.sequence_number,
                        clip(&m.message_id, 40),
                        m.dead_letter_reason.as_deref().unwrap_or("-"),
                        clip(m.dead_letter_description.as_deref().unwrap_or(""), 100)
                    ));
                }
                s.trim_end().to_string()
            });
            Ok(())
        }
        DlqAction::Show { sequence } => {
            let m = find(queue.as_ref(), sequence).await?;
            let v = view(&m);
            out.emit(&v, || serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
        DlqAction::Replay { sequence, all } => {
            let targets: Vec<i64> = if all {
                peek_all(queue.as_ref(), usize::MAX)
                    .await?
                    .iter()
                    .map(|m| m.sequence_number)
                    .collect()
            } else {
                sequence.into_iter().collect()
            };
            let mut replayed = Vec::new();
            for seq in targets {
                replayed.push(replay(queue.as_ref(), seq).await?);
            }
            out.emit(&replayed, || {
                if replayed.is_empty() {
                    "nothing to replay".into()
                } else {
                    replayed
                        .iter()
                        .map(|r| format!("replayed {} as {}", r["from"], r["as"]))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            Ok(())
        }
        DlqAction::Purge { yes } => {
            if !yes {
                return Err(Failure::new(
                    EXIT_INVALID,
                    "purging deletes every dead-lettered message for good; add --yes",
                ));
            }
            let mut purged = 0u64;
            while let Some(d) = queue
                .receive_dead_letter(Duration::from_millis(200))
                .await
                .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?
            {
                queue
                    .complete(&d.lock)
                    .await
                    .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
                purged += 1;
            }
            out.emit(&json!({"purged": purged}), || {
                format!("purged {purged} dead-lettered messages")
            });
            Ok(())
        }
    }
}

async fn peek_all(queue: &dyn Queue, max: usize) -> Result<Vec<ReceivedMessage>, Failure> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = queue.peek_dead_letters(from, 100).await.map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("reading the dead-letter queue failed: {e}"),
            )
        })?;
        let Some(last) = page.last() else { break };
        from = last.sequence_number + 1;
        all.extend(page);
        if all.len() >= max {
            all.truncate(max);
            break;
        }
    }
    Ok(all)
}

async fn find(queue: &dyn Queue, sequence: i64) -> Result<ReceivedMessage, Failure> {
    let page = queue
        .peek_dead_letters(sequence, 1)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
    page.into_iter()
        .find(|m| m.sequence_number == sequence)
        .ok_or_else(|| Failure::new(EXIT_NOT_FOUND, format!("no dead-lettered message with sequence number {sequence}; see `producer dlq list`")))
}

/// Lock the dead-lettered message, resend a copy, then (only then) remove the original.
async fn replay(queue: &dyn Queue, sequence: i64) -> Result<serde_json::Value, Failure> {
    find(queue, sequence).await?;
    let mut passed_over = Vec::new();
    let found = loop {
        match queue.receive_dead_letter(Duration::from_millis(500)).await {
            Ok(Some(d)) if d.message.sequence_number == sequence => break Some(d),
            Ok(Some(d)) => passed_over.push(d),
            Ok(None) => break None,
            Err(e) => {
                release(queue, &passed_over).await;
                return Err(Failure::new(EXIT_FAILED, e.to_string()));
            }
        }
    };
    release(queue, &passed_over).await;
    let Some(d) = found else {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("dead-lettered message {sequence} is locked by someone else or gone"),
        ));
    };
    let m = &d.message;
    let new_id = format!(
        "{}:replay:{}",
        clip(&m.message_id, 80),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let copy = OutgoingMessage {
        message_id: new_id.clone(),
        session_id: m.session_id.clone(),
        content_type: m.content_type.clone(),
        subject: m.subject.clone(),
        correlation_id: m.correlation_id.clone(),
        body: m.body.clone(),
        application_properties: m.application_properties.clone(),
        scheduled_enqueue_time: None,
    };
    if let Err(e) = queue.send(copy).await {
        let _ = queue.abandon(&d.lock).await;
        return Err(Failure::new(
            EXIT_FAILED,
            format!("resending {sequence} failed, the original stays dead-lettered: {e}"),
        ));
    }
    queue.complete(&d.lock).await.map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("resent as {new_id}, but removing the original failed: {e}"),
        )
    })?;
    Ok(json!({"from": m.message_id, "sequenceNumber": sequence, "as": new_id}))
}

async fn release(queue: &dyn Queue, deliveries: &[onboarding_transport::Delivery]) {
    for d in deliveries {
        let _ = queue.abandon(&d.lock).await;
    }
}
