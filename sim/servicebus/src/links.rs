//! Links: attaching (entity senders and receivers, session accepts, `$cbs` and `$management`
//! nodes and their reply links), credit, deliveries with lock tokens as delivery tags,
//! settlement answered the way Service Bus answers it, and detaching on errors.
//!
//! Acts on one connection's state ([`Conn`]) and the shared broker; no I/O beyond its frames.

use chrono::{DateTime, Utc};
use fe2o3_amqp_types::definitions::{Error as AmqpErr, Fields, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    Accepted, Body, DeliveryState, Modified, Rejected, Source, TargetArchetype,
};
use fe2o3_amqp_types::performatives::{Attach, Detach, Disposition, Flow, Transfer};
use fe2o3_amqp_types::primitives::Binary as ByteBuf;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use uuid::Uuid;

use crate::connection::{Conn, error};
use crate::entities::{Msg, SendRefusal, parse_address, to_wire};
use crate::faults::AttachFault;
use crate::queue::{LockError, SessionLockError, Settlement};
use crate::wire::{self, WireError};

const SESSION_FILTER: &str = "com.microsoft:session-filter";
/// Service Bus batches: a message whose data sections are encoded messages.
const BATCH_FORMAT: u32 = 0x8001_3700;
/// .NET ticks at the Unix epoch (`com.microsoft:locked-until-utc` is in ticks).
const TICKS_AT_EPOCH: i64 = 621_355_968_000_000_000;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Requests to `$cbs` or `<entity>/$management` (client sends).
    Requests { entity: Option<String> },
    /// Replies from a node to the client's reply address (client receives).
    Replies { reply_to: String },
    /// Messages into an entity.
    Into { entity: String },
    /// Messages out of an entity (or its dead-letter queue, or one session of it).
    OutOf {
        entity: String,
        dead_letter: bool,
        peek_lock: bool,
        session: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// Waiting for a session to be ready until `deadline`.
    NextSession { deadline: tokio::time::Instant },
    /// Answered only after `at` (fault).
    Delayed { at: tokio::time::Instant },
    /// Never answered (fault).
    Hung,
}

pub(crate) struct Link {
    pub uid: u64,
    pub handle: u32,
    pub attach: Attach,
    pub kind: Kind,
    pub pending: Option<Pending>,
    pub credit: u32,
    pub delivery_count: u32,
    pub drain: bool,
    pub partial: Option<(Transfer, Vec<u8>)>,
    /// Unsettled peek-locked deliveries: delivery id -> lock token.
    pub deliveries: std::collections::HashMap<u32, Uuid>,
}

fn session_filter(source: &Source) -> Option<Option<String>> {
    let filter = source.filter.as_ref()?;
    let value = filter.get(&Symbol::from(SESSION_FILTER))?;
    Some(match value {
        Value::String(s) => Some(s.clone()),
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    })
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn operation_timeout(attach: &Attach) -> Option<std::time::Duration> {
    match attach
        .properties
        .as_ref()?
        .get(&Symbol::from("com.microsoft:timeout"))?
    {
        Value::Uint(ms) => Some(std::time::Duration::from_millis(u64::from(*ms))),
        Value::Ulong(ms) => Some(std::time::Duration::from_millis(*ms)),
        Value::Int(ms) => Some(std::time::Duration::from_millis(u64::try_from(*ms).ok()?)),
        Value::Long(ms) => Some(std::time::Duration::from_millis(u64::try_from(*ms).ok()?)),
        _ => None,
    }
}

fn ticks(at: DateTime<Utc>) -> i64 {
    TICKS_AT_EPOCH + at.timestamp_millis() * 10_000
}

/// A lock token as it travels in a delivery tag: .NET GUID byte order.
pub(crate) fn delivery_tag(token: Uuid) -> ByteBuf {
    ByteBuf::from(token.to_bytes_le().to_vec())
}

fn settlement_of(state: &DeliveryState) -> Option<Settlement> {
    Some(match state {
        DeliveryState::Accepted(_) => Settlement::Complete,
        DeliveryState::Released(_) => Settlement::Abandon { count: false },
        DeliveryState::Modified(Modified {
            undeliverable_here: Some(true),
            ..
        }) => return None, // defer: not supported, leave the lock to expire
        DeliveryState::Modified(m) => Settlement::Abandon {
            count: m.delivery_failed.unwrap_or(true),
        },
        DeliveryState::Rejected(r) => {
            let info = r.error.as_ref().and_then(|e| e.info.as_deref());
            let text = |key: &str| match info.and_then(|i| i.get(&Symbol::from(key))) {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            Settlement::DeadLetter {
                reason: text("DeadLetterReason"),
                description: text("DeadLetterErrorDescription"),
            }
        }
        _ => return None,
    })
}

impl Conn {
    /// Answer an attach: the echo with our role, or a null terminus and a detach with `err`.
    async fn answer_attach(
        &mut self,
        channel: u16,
        link: &Link,
        err: Option<AmqpErr>,
        session: Option<(String, DateTime<Utc>)>,
    ) -> Result<(), WireError> {
        let we_send = link.attach.role == Role::Receiver;
        let mut reply = link.attach.clone();
        reply.role = if we_send {
            Role::Sender
        } else {
            Role::Receiver
        };
        reply.initial_delivery_count = we_send.then_some(0);
        reply.unsettled = None;
        reply.max_message_size = Some(self.broker.max_message_size);
        reply.properties = None;
        if err.is_some() {
            if we_send {
                reply.source = None;
            } else {
                reply.target = None;
            }
        }
        if let Some((id, until)) = session {
            if let Some(source) = reply.source.as_mut() {
                let mut filter = source.filter.clone().unwrap_or_default();
                filter.insert(Symbol::from(SESSION_FILTER), Value::String(id));
                source.filter = Some(filter);
            }
            let mut props = Fields::default();
            props.insert(
                Symbol::from("com.microsoft:locked-until-utc"),
                Value::Long(ticks(until)),
            );
            reply.properties = Some(props);
        }
        self.send(channel, &reply).await?;
        if let Some(e) = err {
            let detach = Detach {
                handle: link.attach.handle.clone(),
                closed: true,
                error: Some(e),
            };
            self.send(channel, &detach).await?;
        } else if !we_send {
            self.grant_credit(channel, link.handle, link.delivery_count)
                .await?;
        }
        Ok(())
    }

    async fn grant_credit(
        &mut self,
        channel: u16,
        handle: u32,
        count: u32,
    ) -> Result<(), WireError> {
        let mut flow = self.session_flow(channel);
        flow.handle = Some(handle.into());
        flow.delivery_count = Some(count);
        flow.link_credit = Some(1000);
        if let Some(l) = self.link_mut(channel, handle) {
            l.credit = 1000;
        }
        self.send(channel, &flow).await
    }

    pub(crate) fn link_mut(&mut self, channel: u16, handle: u32) -> Option<&mut Link> {
        self.sessions.get_mut(&channel)?.links.get_mut(&handle)
    }

    pub(crate) async fn on_attach(
        &mut self,
        channel: u16,
        attach: Attach,
    ) -> Result<(), WireError> {
        let client_sends = attach.role == Role::Sender;
        let address = if client_sends {
            target_address(&attach)
        } else {
            attach.source.as_ref().and_then(|s| s.address.clone())
        }
        .unwrap_or_default();
        let parsed = parse_address(&address);
        let kind = if parsed.entity == "$cbs" || parsed.management {
            let entity = parsed.management.then(|| {
                if parsed.dead_letter {
                    format!("{}/$deadletterqueue", parsed.entity)
                } else {
                    parsed.entity.clone()
                }
            });
            if client_sends {
                Kind::Requests { entity }
            } else {
                Kind::Replies {
                    reply_to: target_address(&attach).unwrap_or_default(),
                }
            }
        } else if client_sends {
            Kind::Into {
                entity: parsed.entity.clone(),
            }
        } else {
            Kind::OutOf {
                entity: parsed.entity.clone(),
                dead_letter: parsed.dead_letter,
                peek_lock: attach.snd_settle_mode != SenderSettleMode::Settled,
                session: None,
            }
        };
        let mut link = Link {
            uid: Conn::new_link_id(),
            handle: attach.handle.0,
            attach,
            kind,
            pending: None,
            credit: 0,
            delivery_count: 0,
            drain: false,
            partial: None,
            deliveries: Default::default(),
        };
        let mut err = None;
        let entity = match &link.kind {
            Kind::Into { entity } | Kind::OutOf { entity, .. } => Some(entity.clone()),
            _ => None,
        };
        if let Some(entity) = &entity {
            if !self.broker.exists(entity) {
                err = Some(error(
                    "amqp:not-found",
                    format!("The messaging entity '{entity}' could not be found."),
                ));
            } else if !self.authorised(entity) {
                err = Some(error(
                    "amqp:unauthorized-access",
                    format!(
                        "Unauthorized access. 'Send'/'Listen' claim(s) are required to perform this operation on '{entity}'."
                    ),
                ));
            } else if matches!(link.kind, Kind::OutOf { .. }) {
                match self.broker.faults.on_receiver_attach() {
                    AttachFault::Hang => link.pending = Some(Pending::Hung),
                    AttachFault::Refuse => {
                        err = Some(error("amqp:internal-error", "attach refused (fault)"))
                    }
                    AttachFault::None => {
                        if let Some(d) = self.broker.faults.attach_delay() {
                            link.pending = Some(Pending::Delayed {
                                at: tokio::time::Instant::now() + d,
                            });
                        }
                    }
                }
            }
        }
        let handle = link.handle;
        if err.is_some() {
            return self.answer_attach(channel, &link, err, None).await;
        }
        let held = link.pending.is_some();
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        session.links.insert(handle, link);
        if !held {
            self.complete_attach(channel, handle).await?;
        }
        Ok(())
    }

    /// Finish an attach that is no longer held: lock a session if one is asked for.
    async fn complete_attach(&mut self, channel: u16, handle: u32) -> Result<(), WireError> {
        let Some(link) = self.link_mut(channel, handle) else {
            return Ok(());
        };
        // An accept of the next session keeps the deadline it got when it first found none:
        // trying again on each pump must not push the service's wait further out.
        let waiting_since = match link.pending.take() {
            Some(Pending::NextSession { deadline }) => Some(deadline),
            _ => None,
        };
        let (entity, dead_letter) = match &link.kind {
            Kind::OutOf {
                entity,
                dead_letter,
                ..
            } => (entity.clone(), *dead_letter),
            _ => {
                let link = self.take_link(channel, handle);
                return self.answer_and_keep(channel, link, None, None).await;
            }
        };
        let filter = link.attach.source.as_deref().and_then(session_filter);
        let uid = link.uid;
        let timeout = operation_timeout(&link.attach).unwrap_or(self.config.session_wait);
        let requires = self
            .broker
            .lock()
            .queues
            .get(&entity)
            .is_some_and(|q| q.config.requires_session);
        let Some(wanted) = filter.filter(|_| requires && !dead_letter) else {
            let err = (requires && !dead_letter).then(|| {
                error(
                    "amqp:not-allowed",
                    format!("It is not possible for an entity that requires sessions to create a non-sessionful message receiver. TrackingId:sim, Path:{entity}"),
                )
            });
            let link = self.take_link(channel, handle);
            return self.answer_and_keep(channel, link, err, None).await;
        };
        let locked = self
            .broker
            .lock()
            .queues
            .get_mut(&entity)
            .map(|q| q.lock_session(wanted.as_deref(), uid, Utc::now()));
        match locked {
            Some(Ok(Some((id, until)))) => {
                let link = self.take_link(channel, handle);
                let link = link.map(|mut l| {
                    if let Kind::OutOf { session, .. } = &mut l.kind {
                        *session = Some(id.clone());
                    }
                    l
                });
                self.answer_and_keep(channel, link, None, Some((id, until)))
                    .await
            }
            Some(Ok(None)) => {
                if let Some(link) = self.link_mut(channel, handle) {
                    link.pending = Some(Pending::NextSession {
                        deadline: waiting_since
                            .unwrap_or_else(|| tokio::time::Instant::now() + timeout),
                    });
                }
                Ok(())
            }
            Some(Err(SessionLockError::CannotBeLocked)) => {
                let link = self.take_link(channel, handle);
                let err = error(
                    "com.microsoft:session-cannot-be-locked",
                    format!(
                        "The requested session '{}' cannot be accepted. It may be locked by another receiver.",
                        wanted.unwrap_or_default()
                    ),
                );
                self.answer_and_keep(channel, link, Some(err), None).await
            }
            None => Ok(()),
        }
    }

    fn take_link(&mut self, channel: u16, handle: u32) -> Option<Link> {
        self.sessions.get_mut(&channel)?.links.remove(&handle)
    }

    /// Answer the attach; keep the link unless it was refused.
    async fn answer_and_keep(
        &mut self,
        channel: u16,
        link: Option<Link>,
        err: Option<AmqpErr>,
        session: Option<(String, DateTime<Utc>)>,
    ) -> Result<(), WireError> {
        let Some(link) = link else { return Ok(()) };
        let refused = err.is_some();
        self.answer_attach(channel, &link, err, session).await?;
        if !refused && let Some(s) = self.sessions.get_mut(&channel) {
            let handle = link.handle;
            s.links.insert(handle, link);
            if let Some(l) = s.links.get(&handle)
                && l.attach.role == Role::Sender
            {
                let count = l.delivery_count;
                self.grant_credit(channel, handle, count).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn on_flow(&mut self, channel: u16, flow: Flow) -> Result<(), WireError> {
        let Some(handle) = flow.handle.as_ref().map(|h| h.0) else {
            if flow.echo {
                let reply = self.session_flow(channel);
                self.send(channel, &reply).await?;
            }
            return Ok(());
        };
        if let Some(link) = self.link_mut(channel, handle)
            && link.attach.role == Role::Receiver
        {
            let theirs = flow.delivery_count.unwrap_or(0);
            let credit = flow.link_credit.unwrap_or(0);
            link.credit = theirs
                .wrapping_add(credit)
                .wrapping_sub(link.delivery_count);
            link.drain = flow.drain;
        }
        Ok(())
    }

    /// Send a message on a link we send on (a transfer, split to the client's frame size).
    pub(crate) async fn transfer(
        &mut self,
        channel: u16,
        handle: u32,
        message: Msg,
        tag: ByteBuf,
        settled: bool,
    ) -> Result<u32, WireError> {
        let payload = serde_amqp::to_vec(&Serializable(message))
            .map_err(|e| WireError::Decode(e.to_string()))?;
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(0);
        };
        let delivery_id = session.next_delivery_id;
        session.next_delivery_id = session.next_delivery_id.wrapping_add(1);
        let chunk = self.remote_max_frame.saturating_sub(512).max(256);
        let parts: Vec<&[u8]> = if payload.is_empty() {
            vec![&payload[..]]
        } else {
            payload.chunks(chunk).collect()
        };
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            let transfer = Transfer {
                handle: handle.into(),
                delivery_id: Some(delivery_id),
                delivery_tag: Some(tag.clone()),
                message_format: Some(0),
                settled: Some(settled),
                more: i < last,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            };
            let bytes = wire::encode_amqp(channel, &transfer, part)?;
            if let Some(s) = self.sessions.get_mut(&channel) {
                s.next_outgoing_id = s.next_outgoing_id.wrapping_add(1);
            }
            self.write(&bytes).await?;
        }
        Ok(delivery_id)
    }

    pub(crate) async fn on_transfer(
        &mut self,
        channel: u16,
        transfer: Transfer,
        payload: bytes::Bytes,
    ) -> Result<(), WireError> {
        let handle = transfer.handle.0;
        if let Some(s) = self.sessions.get_mut(&channel) {
            s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        }
        let Some(link) = self.link_mut(channel, handle) else {
            return Ok(());
        };
        let (first, mut bytes) = link
            .partial
            .take()
            .unwrap_or((transfer.clone(), Vec::new()));
        bytes.extend_from_slice(&payload);
        if transfer.more {
            link.partial = Some((first, bytes));
            return Ok(());
        }
        link.credit = link.credit.saturating_sub(1);
        link.delivery_count = link.delivery_count.wrapping_add(1);
        let low = link.credit < 100;
        let count = link.delivery_count;
        let kind = link.kind.clone();
        let unanswered = match kind {
            Kind::Into { .. } => self.broker.faults.take_unanswered_send(),
            Kind::Requests { .. } => self.broker.faults.take_unanswered_request(),
            _ => false,
        };
        if unanswered {
            // As a connection gone silent with the send in flight: neither stored nor settled.
            return Ok(());
        }
        let state = match kind {
            Kind::Into { entity } => self.accept_into(&entity, &first, &bytes),
            Kind::Requests { entity } => {
                self.on_request(channel, entity.as_deref(), &bytes).await?;
                DeliveryState::Accepted(Accepted {})
            }
            _ => DeliveryState::Accepted(Accepted {}),
        };
        if first.settled != Some(true)
            && let Some(id) = first.delivery_id
        {
            let d = Disposition {
                role: Role::Receiver,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            };
            self.send(channel, &d).await?;
        }
        if low {
            self.grant_credit(channel, handle, count).await?;
        }
        Ok(())
    }

    fn accept_into(&self, entity: &str, first: &Transfer, bytes: &[u8]) -> DeliveryState {
        let reject = |condition: &str, text: String| {
            DeliveryState::Rejected(Rejected {
                error: Some(error(condition, text)),
            })
        };
        if bytes.len() as u64 > self.broker.max_message_size {
            return reject(
                "amqp:link:message-size-exceeded",
                format!(
                    "The received message (size {} bytes) exceeds the limit ({} bytes) currently allowed on the link.",
                    bytes.len(),
                    self.broker.max_message_size
                ),
            );
        }
        let decoded: Result<Deserializable<Msg>, _> = serde_amqp::from_slice(bytes);
        let Ok(Deserializable(message)) = decoded else {
            return reject(
                "amqp:decode-error",
                "the message could not be decoded".into(),
            );
        };
        let messages = if first.message_format == Some(BATCH_FORMAT) {
            match &message.body {
                Body::Data(batch) => batch
                    .iter()
                    .filter_map(|d| serde_amqp::from_slice::<Deserializable<Msg>>(&d.0).ok())
                    .map(|d| d.0)
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            vec![message]
        };
        for m in messages {
            match self.broker.send(entity, m, Utc::now()) {
                Ok(_) => {}
                Err(SendRefusal::NotFound) => {
                    return reject(
                        "amqp:not-found",
                        format!("The messaging entity '{entity}' could not be found."),
                    );
                }
                Err(SendRefusal::NeedsSession) => {
                    return reject(
                        "amqp:not-allowed",
                        format!(
                            "The SessionId was not set on a message, and it cannot be sent to the entity '{entity}'. Entities that have session support enabled can only receive messages that have a non-null SessionId."
                        ),
                    );
                }
            }
        }
        DeliveryState::Accepted(Accepted {})
    }

    pub(crate) async fn on_disposition(
        &mut self,
        channel: u16,
        d: Disposition,
    ) -> Result<(), WireError> {
        if d.role != Role::Receiver {
            return Ok(());
        }
        let Some(state) = d.state.as_ref() else {
            return Ok(());
        };
        let last = d.last.unwrap_or(d.first);
        let mut id = d.first;
        loop {
            self.settle_one(channel, id, state, d.settled).await?;
            if id == last {
                break;
            }
            id = id.wrapping_add(1);
        }
        Ok(())
    }

    async fn settle_one(
        &mut self,
        channel: u16,
        delivery_id: u32,
        state: &DeliveryState,
        settled: bool,
    ) -> Result<(), WireError> {
        let found = self.sessions.get(&channel).and_then(|s| {
            s.links.values().find_map(|l| match &l.kind {
                Kind::OutOf { entity, .. } => l
                    .deliveries
                    .get(&delivery_id)
                    .map(|token| (l.handle, l.uid, entity.clone(), *token)),
                _ => None,
            })
        });
        let Some((handle, uid, entity, token)) = found else {
            return Ok(());
        };
        let Some(how) = settlement_of(state) else {
            return Ok(());
        };
        let result = self
            .broker
            .lock()
            .queues
            .get_mut(&entity)
            .map(|q| q.settle(token, how, Some(uid), Utc::now()));
        if let Some(l) = self.link_mut(channel, handle) {
            l.deliveries.remove(&delivery_id);
        }
        self.broker.changed.notify_waiters();
        if settled {
            return Ok(());
        }
        let outcome = match result {
            // The service confirms with the outcome the client asked for (the official SDK
            // checks that it is the same).
            // A dead-letter is confirmed as `rejected` without an error (an error there means
            // the settlement failed).
            Some(Ok(())) | None => match state {
                DeliveryState::Rejected(_) => DeliveryState::Rejected(Rejected { error: None }),
                other => other.clone(),
            },
            Some(Err(LockError::MessageLockLost)) => DeliveryState::Rejected(Rejected {
                error: Some(error(
                    "com.microsoft:message-lock-lost",
                    "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
                )),
            }),
            Some(Err(LockError::SessionLockLost)) => DeliveryState::Rejected(Rejected {
                error: Some(error(
                    "com.microsoft:session-lock-lost",
                    "The session lock has expired on the MessageSession. Accept a new MessageSession.",
                )),
            }),
        };
        let reply = Disposition {
            role: Role::Sender,
            first: delivery_id,
            last: None,
            settled: true,
            state: Some(outcome),
            batchable: false,
        };
        self.send(channel, &reply).await
    }

    /// Deliver what links with credit can take; answer held attaches whose time has come.
    pub(crate) async fn pump(&mut self) -> Result<(), WireError> {
        let now = tokio::time::Instant::now();
        let mut ready = Vec::new();
        let mut timed_out = Vec::new();
        let mut sending = Vec::new();
        for (channel, s) in &self.sessions {
            for l in s.links.values() {
                match &l.pending {
                    Some(Pending::Delayed { at }) if *at <= now => ready.push((*channel, l.handle)),
                    Some(Pending::NextSession { deadline }) if *deadline <= now => {
                        timed_out.push((*channel, l.handle))
                    }
                    Some(Pending::NextSession { .. }) => ready.push((*channel, l.handle)),
                    None if matches!(l.kind, Kind::OutOf { .. }) => {
                        sending.push((*channel, l.handle))
                    }
                    _ => {}
                }
            }
        }
        for (channel, handle) in ready {
            self.complete_attach(channel, handle).await?;
        }
        for (channel, handle) in timed_out {
            let link = self.take_link(channel, handle);
            let err = error(
                "com.microsoft:timeout",
                "The operation did not complete within the allocated time (no session was available).",
            );
            if let Some(link) = link {
                self.answer_attach(channel, &link, Some(err), None).await?;
            }
        }
        for (channel, handle) in sending {
            self.deliver(channel, handle).await?;
        }
        Ok(())
    }

    async fn deliver(&mut self, channel: u16, handle: u32) -> Result<(), WireError> {
        loop {
            let Some(link) = self.link_mut(channel, handle) else {
                return Ok(());
            };
            let Kind::OutOf {
                entity,
                dead_letter,
                peek_lock,
                session,
            } = link.kind.clone()
            else {
                return Ok(());
            };
            if link.credit == 0 {
                return Ok(());
            }
            let drain = link.drain;
            let next = {
                let mut state = self.broker.lock();
                state.queues.get_mut(&entity).and_then(|q| {
                    if peek_lock {
                        q.lock_next(dead_letter, session.as_deref(), Utc::now())
                    } else {
                        q.take_next(dead_letter, session.as_deref(), Utc::now())
                    }
                })
            };
            let Some(stored) = next else {
                if drain {
                    return self.finish_drain(channel, handle).await;
                }
                return Ok(());
            };
            let token = stored
                .lock
                .as_ref()
                .map(|l| l.token)
                .unwrap_or_else(Uuid::new_v4);
            let message = to_wire(&stored, peek_lock);
            let delivery_id = self
                .transfer(channel, handle, message, delivery_tag(token), !peek_lock)
                .await?;
            if let Some(link) = self.link_mut(channel, handle) {
                link.credit -= 1;
                link.delivery_count = link.delivery_count.wrapping_add(1);
                if peek_lock {
                    link.deliveries.insert(delivery_id, token);
                }
            }
        }
    }

    async fn finish_drain(&mut self, channel: u16, handle: u32) -> Result<(), WireError> {
        let mut flow = self.session_flow(channel);
        let Some(link) = self.link_mut(channel, handle) else {
            return Ok(());
        };
        link.delivery_count = link.delivery_count.wrapping_add(link.credit);
        link.credit = 0;
        link.drain = false;
        flow.handle = Some(handle.into());
        flow.delivery_count = Some(link.delivery_count);
        flow.link_credit = Some(0);
        flow.drain = true;
        self.send(channel, &flow).await
    }

    /// A link went away: its session lock and message locks are released.
    pub(crate) fn release_link(&self, link: &Link) {
        if let Kind::OutOf {
            entity, session, ..
        } = &link.kind
        {
            let mut state = self.broker.lock();
            if let Some(q) = state.queues.get_mut(entity) {
                match session {
                    Some(s) => q.release_session(s, link.uid),
                    None => q.release_locks(&link.deliveries.values().copied().collect::<Vec<_>>()),
                }
            }
            drop(state);
            self.broker.changed.notify_waiters();
        }
    }

    /// Links whose entity is no longer covered by an unexpired token are detached, as
    /// Service Bus detaches links when their token runs out.
    pub(crate) async fn detach_unauthorised(&mut self) -> Result<(), WireError> {
        let mut expired = Vec::new();
        for (channel, s) in &self.sessions {
            for l in s.links.values() {
                if let Kind::Into { entity } | Kind::OutOf { entity, .. } = &l.kind
                    && !self.authorised(entity)
                {
                    expired.push((*channel, l.handle));
                }
            }
        }
        for (channel, handle) in expired {
            if let Some(link) = self.take_link(channel, handle) {
                self.release_link(&link);
                let detach = Detach {
                    handle: handle.into(),
                    closed: true,
                    error: Some(error(
                        "amqp:unauthorized-access",
                        "Unauthorized access. The token has expired.",
                    )),
                };
                self.send(channel, &detach).await?;
            }
        }
        Ok(())
    }
}
