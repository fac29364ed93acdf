//! `dlq list|show|replay|delete|purge`: the dead-letter queue. Replay keeps body, session and
//! application properties, gives the copy a new MessageId, and removes the original only after
//! the resend succeeded.

use std::time::Duration;

use clap::Subcommand;
use onboarding_config::Config;
use onboarding_transport::{OutgoingMessage, Queue, ReceivedMessage};
use serde_json::json;

use crate::output::Output;

/// The most dead-lettered messages `dlq list` reads to count them.
const LIST_LIMIT: usize = 10_000;
/// Dead letters `purge` holds at once before completing them.
const PURGE_BATCH: usize = 100;
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
    /// Send dead-lettered messages back to the queue (one by sequence number, or --all; with
    /// --all a message that cannot be resent is reported and stays, and the rest go on).
    Replay {
        #[arg(required_unless_present = "all")]
        sequence: Option<i64>,
        #[arg(long, conflicts_with = "sequence")]
        all: bool,
    },
    /// Delete one dead-lettered message for good (by sequence number).
    Delete { sequence: i64 },
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
        // The bytes as received: re-parsed JSON hides what got a message refused (duplicate
        // keys, invalid UTF-8, odd whitespace).
        "bodyExact": exact(&m.body),
        "bodyBytes": m.body.len(),
    })
}

/// The body exactly as received: its text when it is UTF-8, else every byte that is not
/// printable ASCII escaped as `\xNN`.
fn exact(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => text.to_string(),
        Err(_) => body
            .iter()
            .map(|&b| match b {
                b' '..=b'~' | b'\n' | b'\r' | b'\t' => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect(),
    }
}

/// `dlq show` for people: the metadata, then the body byte for byte.
fn show_text(m: &ReceivedMessage) -> String {
    let utf8 = std::str::from_utf8(&m.body).is_ok();
    format!(
        "sequence number   {}\nmessage id        {}\nsession id        {}\nenqueued          {}\ndelivery count    {}\nreason            {}\ndescription       {}\nproperties        {}\nbody ({} bytes{}, exactly as received):\n{}",
        m.sequence_number,
        m.message_id,
        m.session_id.as_deref().unwrap_or("-"),
        m.enqueued_time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        m.delivery_count,
        m.dead_letter_reason.as_deref().unwrap_or("-"),
        m.dead_letter_description.as_deref().unwrap_or("-"),
        serde_json::to_string(&m.application_properties).unwrap_or_default(),
        m.body.len(),
        if utf8 {
            ""
        } else {
            ", not UTF-8: bytes escaped as \\xNN"
        },
        exact(&m.body)
    )
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn run(config: &Config, out: &Output, action: DlqAction) -> Result<(), Failure> {
    let (queue, _) = crate::stores::existing_transport(config).await?;
    match action {
        DlqAction::List { max } => {
            let mut items = peek_all(queue.as_ref(), LIST_LIMIT).await?;
            let total = items.len();
            items.truncate(max);
            if items.len() < total {
                // On stderr, so that --json stays one document on stdout.
                eprintln!(
                    "producer: showing {} of {}{} dead-lettered messages; --max {} shows more",
                    items.len(),
                    total,
                    if total == LIST_LIMIT { "+" } else { "" },
                    total
                );
            }
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
            out.emit(&view(&m), || show_text(&m));
            Ok(())
        }
        DlqAction::Delete { sequence } => {
            let d = take(queue.as_ref(), sequence).await?;
            queue
                .complete(&d.lock)
                .await
                .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
            out.emit(
                &json!({"deleted": sequence, "messageId": d.message.message_id}),
                || {
                    format!(
                        "deleted dead-lettered message {sequence} ({})",
                        d.message.message_id
                    )
                },
            );
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
            let mut failed = Vec::new();
            for seq in targets {
                match replay(queue.as_ref(), seq).await {
                    Ok(r) => replayed.push(r),
                    // One that cannot be resent stays dead-lettered; the others still go.
                    Err(f) if all => {
                        eprintln!("producer: {}", f.message);
                        failed.push(json!({"sequenceNumber": seq, "error": f.message}));
                    }
                    Err(f) => return Err(f),
                }
            }
            out.emit(&replayed, || {
                if replayed.is_empty() {
                    "nothing replayed".into()
                } else {
                    replayed
                        .iter()
                        .map(|r| format!("replayed {} as {}", r["from"], r["as"]))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::new(
                    EXIT_FAILED,
                    format!(
                        "{} of {} dead-lettered messages could not be resent and stay dead-lettered (above)",
                        failed.len(),
                        failed.len() + replayed.len()
                    ),
                ))
            }
        }
        DlqAction::Purge { yes } => {
            if !yes {
                return Err(Failure::new(
                    EXIT_INVALID,
                    "purging deletes every dead-lettered message for good; add --yes",
                ));
            }
            let mut purged = 0u64;
            // In batches: a transport may confirm completions only when no other dead letter
            // is held (Service Bus closes its dead-letter link to do so), once per batch.
            loop {
                let mut batch = Vec::new();
                while batch.len() < PURGE_BATCH {
                    let received = queue
                        .receive_dead_letter(Duration::from_millis(200))
                        .await
                        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
                    match received {
                        Some(d) => batch.push(d),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                for d in &batch {
                    queue.complete(&d.lock).await.map_err(|e| {
                        Failure::new(
                            EXIT_FAILED,
                            format!(
                                "{e} (after {purged} completions; `producer dlq list` shows what is left)"
                            ),
                        )
                    })?;
                    purged += 1;
                }
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

/// Lock the dead-lettered message `sequence` (releasing any passed over on the way).
async fn take(queue: &dyn Queue, sequence: i64) -> Result<onboarding_transport::Delivery, Failure> {
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
    found.ok_or_else(|| {
        Failure::new(
            EXIT_NOT_FOUND,
            format!("dead-lettered message {sequence} is locked by someone else or gone"),
        )
    })
}

/// Lock the dead-lettered message, resend a copy, then (only then) remove the original.
async fn replay(queue: &dyn Queue, sequence: i64) -> Result<serde_json::Value, Failure> {
    let d = take(queue, sequence).await?;
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
