//! The message store of one entity (a queue or a topic subscription) as Service Bus keeps it:
//! sequence numbers, scheduled messages, peek-locks with their expiry, delivery counts, session
//! locks and session state, and the dead-letter sub-queue beside it.
//!
//! Pure: a state machine over values and the `now` it is given. No I/O, no clock, no AMQP (the
//! message body is a type parameter), so every rule is unit-tested here.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// What an entity is configured with (Service Bus defaults: 60 s lock, 10 deliveries).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub requires_session: bool,
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
}

/// A message as the entity holds it.
#[derive(Debug, Clone)]
pub struct Stored<M> {
    pub sequence_number: i64,
    pub message_id: Option<String>,
    pub session_id: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Deliveries that ended without settlement (abandon, lock expiry): the AMQP header's
    /// delivery-count on the next delivery.
    pub delivery_count: u32,
    pub lock: Option<MessageLock>,
    /// Set on dead-lettered copies: reason, description, the entity it came from.
    pub dead_letter: Option<DeadLetterInfo>,
    pub body: M,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLock {
    pub token: Uuid,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    pub reason: Option<String>,
    pub description: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, Default)]
struct SessionEntry {
    /// The link (connection-wide unique id) holding the session, and until when.
    holder: Option<(u64, DateTime<Utc>)>,
    state: Option<Vec<u8>>,
}

/// Why a settlement or renewal was refused (the AMQP condition follows from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// `com.microsoft:message-lock-lost`
    MessageLockLost,
    /// `com.microsoft:session-lock-lost`
    SessionLockLost,
}

/// How a peek-locked message is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Complete,
    /// `count` is false for AMQP `released` (never processed): the delivery count stays.
    Abandon {
        count: bool,
    },
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
    },
}

/// One entity: its active messages and its `$DeadLetterQueue`.
#[derive(Debug)]
pub struct QueueState<M> {
    pub name: String,
    pub config: QueueConfig,
    next_sequence: i64,
    messages: BTreeMap<i64, Stored<M>>,
    dead_letters: BTreeMap<i64, Stored<M>>,
    sessions: HashMap<String, SessionEntry>,
}

impl<M: Clone> QueueState<M> {
    pub fn new(name: impl Into<String>, config: QueueConfig) -> Self {
        Self {
            name: name.into(),
            config,
            next_sequence: 1,
            messages: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            sessions: HashMap::new(),
        }
    }

    fn store(&mut self, dlq: bool) -> &mut BTreeMap<i64, Stored<M>> {
        if dlq {
            &mut self.dead_letters
        } else {
            &mut self.messages
        }
    }

    /// Enqueue (or schedule, when `scheduled_at` is in the future); returns the sequence number.
    pub fn enqueue(
        &mut self,
        body: M,
        message_id: Option<String>,
        session_id: Option<String>,
        scheduled_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> i64 {
        let sequence_number = self.next_sequence;
        self.next_sequence += 1;
        let scheduled_at = scheduled_at.filter(|at| *at > now);
        self.messages.insert(
            sequence_number,
            Stored {
                sequence_number,
                message_id,
                session_id,
                enqueued_at: scheduled_at.unwrap_or(now),
                scheduled_at,
                delivery_count: 0,
                lock: None,
                dead_letter: None,
                body,
            },
        );
        sequence_number
    }

    /// `com.microsoft:cancel-scheduled-message`: true when a scheduled message was removed.
    pub fn cancel_scheduled(&mut self, sequence_number: i64, now: DateTime<Utc>) -> bool {
        let scheduled = self
            .messages
            .get(&sequence_number)
            .is_some_and(|m| m.scheduled_at.is_some_and(|at| at > now));
        if scheduled {
            self.messages.remove(&sequence_number);
        }
        scheduled
    }

    /// Let go of expired message and session locks: the message counts one more delivery and,
    /// past the entity's maximum, moves to the dead-letter queue (`MaxDeliveryCountExceeded`).
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let expired_sessions: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.holder.is_some_and(|(_, until)| until <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_sessions {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.holder = None;
            }
            self.unlock_session_messages(&id, true);
        }
        let expired: Vec<i64> = self
            .messages
            .values()
            .filter(|m| m.session_id.is_none() || !self.config.requires_session)
            .filter(|m| m.lock.as_ref().is_some_and(|l| l.until <= now))
            .map(|m| m.sequence_number)
            .collect();
        for seq in expired {
            self.release(seq, true);
        }
        for m in self.dead_letters.values_mut() {
            if m.lock.as_ref().is_some_and(|l| l.until <= now) {
                m.lock = None;
                m.delivery_count += 1;
            }
        }
    }

    /// A delivery that ended unsettled: count it and dead-letter past the maximum.
    fn release(&mut self, seq: i64, count: bool) {
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        m.lock = None;
        if count {
            m.delivery_count += 1;
        }
        if m.delivery_count >= self.config.max_delivery_count {
            self.move_to_dead_letters(
                seq,
                Some("MaxDeliveryCountExceeded".into()),
                Some(format!(
                    "Message could not be consumed after {} delivery attempts.",
                    self.config.max_delivery_count
                )),
            );
        }
    }

    fn unlock_session_messages(&mut self, session: &str, count: bool) {
        let locked: Vec<i64> = self
            .messages
            .values()
            .filter(|m| m.session_id.as_deref() == Some(session) && m.lock.is_some())
            .map(|m| m.sequence_number)
            .collect();
        for seq in locked {
            self.release(seq, count);
        }
    }

    fn move_to_dead_letters(
        &mut self,
        seq: i64,
        reason: Option<String>,
        description: Option<String>,
    ) {
        if let Some(mut m) = self.messages.remove(&seq) {
            m.lock = None;
            m.dead_letter = Some(DeadLetterInfo {
                reason,
                description,
                source: self.name.clone(),
            });
            // The dead-letter queue numbers its own messages.
            let dlq_seq = self.next_sequence;
            self.next_sequence += 1;
            m.sequence_number = dlq_seq;
            self.dead_letters.insert(dlq_seq, m);
        }
    }

    fn is_available(m: &Stored<M>, now: DateTime<Utc>) -> bool {
        m.lock.is_none() && m.scheduled_at.is_none_or(|at| at <= now)
    }

    /// Lock and return the next available message: of `session` on a session entity (whose
    /// lock the caller holds), of the main queue or the dead-letter queue otherwise.
    pub fn lock_next(
        &mut self,
        dlq: bool,
        session: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Stored<M>> {
        self.expire(now);
        let lock_duration = self.config.lock_duration;
        let session_until = session.and_then(|s| self.session_locked_until(s));
        let m = self.store(dlq).values_mut().find(|m| {
            Self::is_available(m, now)
                && (dlq || session.is_none() || m.session_id.as_deref() == session)
        })?;
        let until = session_until
            .filter(|_| !dlq)
            .unwrap_or(now + lock_duration);
        m.lock = Some(MessageLock {
            token: Uuid::new_v4(),
            until,
        });
        Some(m.clone())
    }

    /// Remove and return the next available message (receive-and-delete).
    pub fn take_next(
        &mut self,
        dlq: bool,
        session: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Stored<M>> {
        let seq = self.lock_next(dlq, session, now)?.sequence_number;
        self.store(dlq).remove(&seq)
    }

    fn find_locked(&mut self, token: Uuid) -> Option<(bool, i64)> {
        for (dlq, store) in [(false, &self.messages), (true, &self.dead_letters)] {
            if let Some(m) = store
                .values()
                .find(|m| m.lock.as_ref().is_some_and(|l| l.token == token))
            {
                return Some((dlq, m.sequence_number));
            }
        }
        None
    }

    /// Settle a peek-locked message by its lock token. `holder` is the session link settling
    /// a session message (its session lock must still be held).
    pub fn settle(
        &mut self,
        token: Uuid,
        how: Settlement,
        holder: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), LockError> {
        self.expire(now);
        let Some((dlq, seq)) = self.find_locked(token) else {
            return Err(self.lost_kind(holder));
        };
        if !dlq
            && self.config.requires_session
            && let Some(h) = holder
            && let Some(session) = self.messages.get(&seq).and_then(|m| m.session_id.clone())
            && self.session_holder(&session) != Some(h)
        {
            return Err(LockError::SessionLockLost);
        }
        match how {
            Settlement::Complete => {
                self.store(dlq).remove(&seq);
            }
            Settlement::Abandon { count } => {
                if dlq {
                    if let Some(m) = self.dead_letters.get_mut(&seq) {
                        m.lock = None;
                        m.delivery_count += u32::from(count);
                    }
                } else {
                    self.release(seq, count);
                }
            }
            Settlement::DeadLetter {
                reason,
                description,
            } => {
                if dlq {
                    // Dead-lettering a dead letter leaves it where it is, as Service Bus does.
                    if let Some(m) = self.dead_letters.get_mut(&seq) {
                        m.lock = None;
                    }
                } else {
                    self.move_to_dead_letters(seq, reason, description);
                }
            }
        }
        Ok(())
    }

    fn lost_kind(&self, holder: Option<u64>) -> LockError {
        let holds_a_session = holder.is_some_and(|h| {
            self.sessions
                .values()
                .any(|s| s.holder.is_some_and(|(id, _)| id == h))
        });
        if self.config.requires_session && holder.is_some() && !holds_a_session {
            LockError::SessionLockLost
        } else {
            LockError::MessageLockLost
        }
    }

    /// `com.microsoft:renew-lock`: a message lock (not on session entities, where the session
    /// lock holds the messages).
    pub fn renew_message_lock(
        &mut self,
        token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LockError> {
        self.expire(now);
        let (dlq, seq) = self.find_locked(token).ok_or(LockError::MessageLockLost)?;
        let until = now + self.config.lock_duration;
        let requires_session = self.config.requires_session;
        let m = self
            .store(dlq)
            .get_mut(&seq)
            .ok_or(LockError::MessageLockLost)?;
        if requires_session && !dlq {
            return Err(LockError::SessionLockLost);
        }
        if let Some(lock) = m.lock.as_mut() {
            lock.until = until;
        }
        Ok(until)
    }

    /// Expire every lock now (the fault "locks expire early").
    pub fn expire_all_locks(&mut self, now: DateTime<Utc>) {
        for s in self.sessions.values_mut() {
            if let Some((_, until)) = s.holder.as_mut() {
                *until = now;
            }
        }
        for m in self
            .messages
            .values_mut()
            .chain(self.dead_letters.values_mut())
        {
            if let Some(lock) = m.lock.as_mut() {
                lock.until = now;
            }
        }
        self.expire(now);
    }

    fn session_holder(&self, session: &str) -> Option<u64> {
        self.sessions
            .get(session)
            .and_then(|s| s.holder.map(|(h, _)| h))
    }

    pub fn session_locked_until(&self, session: &str) -> Option<DateTime<Utc>> {
        self.sessions
            .get(session)
            .and_then(|s| s.holder.map(|(_, until)| until))
    }

    /// Lock a session for `holder`: the named one (refused while another holder has it), or
    /// with `None` the first session with a message ready whose lock is free. `Ok(None)`: no
    /// session is ready yet (the caller waits and asks again).
    pub fn lock_session(
        &mut self,
        wanted: Option<&str>,
        holder: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, DateTime<Utc>)>, SessionLockError> {
        self.expire(now);
        let until = now + self.config.lock_duration;
        let name = match wanted {
            Some(s) => {
                if self.session_holder(s).is_some_and(|other| other != holder) {
                    return Err(SessionLockError::CannotBeLocked);
                }
                s.to_string()
            }
            None => {
                let free = |s: &str| self.session_holder(s).is_none();
                let Some(s) = self
                    .messages
                    .values()
                    .filter(|m| Self::is_available(m, now))
                    .filter_map(|m| m.session_id.as_deref())
                    .find(|s| free(s))
                else {
                    return Ok(None);
                };
                s.to_string()
            }
        };
        self.sessions.entry(name.clone()).or_default().holder = Some((holder, until));
        Ok(Some((name, until)))
    }

    /// `com.microsoft:renew-session-lock`.
    pub fn renew_session_lock(
        &mut self,
        session: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LockError> {
        self.expire(now);
        let until = now + self.config.lock_duration;
        let entry = self
            .sessions
            .get_mut(session)
            .ok_or(LockError::SessionLockLost)?;
        let Some((holder, _)) = entry.holder else {
            return Err(LockError::SessionLockLost);
        };
        entry.holder = Some((holder, until));
        for m in self.messages.values_mut() {
            if m.session_id.as_deref() == Some(session)
                && let Some(lock) = m.lock.as_mut()
            {
                lock.until = until;
            }
        }
        Ok(until)
    }

    /// The session link closed: its session is free again and what it held comes back
    /// (counted as a delivery, as Service Bus does for a closed receiver's unsettled messages).
    pub fn release_session(&mut self, session: &str, holder: u64) {
        if self.session_holder(session) == Some(holder) {
            if let Some(s) = self.sessions.get_mut(session) {
                s.holder = None;
            }
            self.unlock_session_messages(session, true);
        }
    }

    /// A non-session link closed: its locked messages come back at once.
    pub fn release_locks(&mut self, tokens: &[Uuid]) {
        for token in tokens {
            if let Some((dlq, seq)) = self.find_locked(*token) {
                if dlq {
                    if let Some(m) = self.dead_letters.get_mut(&seq) {
                        m.lock = None;
                        m.delivery_count += 1;
                    }
                } else {
                    self.release(seq, true);
                }
            }
        }
    }

    pub fn session_state(&self, session: &str) -> Option<Vec<u8>> {
        self.sessions.get(session).and_then(|s| s.state.clone())
    }

    pub fn set_session_state(&mut self, session: &str, state: Option<Vec<u8>>) {
        self.sessions.entry(session.to_string()).or_default().state = state;
    }

    /// `com.microsoft:peek-message`: active (including locked) and scheduled messages from
    /// `from` on, without locking them.
    pub fn peek(
        &self,
        dlq: bool,
        from: i64,
        count: usize,
        session: Option<&str>,
    ) -> Vec<Stored<M>> {
        let store = if dlq {
            &self.dead_letters
        } else {
            &self.messages
        };
        store
            .range(from..)
            .map(|(_, m)| m)
            .filter(|m| session.is_none() || m.session_id.as_deref() == session)
            .take(count)
            .cloned()
            .collect()
    }

    /// Counts: active (due), scheduled, dead-lettered.
    pub fn counts(&self, now: DateTime<Utc>) -> (usize, usize, usize) {
        let scheduled = self
            .messages
            .values()
            .filter(|m| m.scheduled_at.is_some_and(|at| at > now))
            .count();
        (
            self.messages.len() - scheduled,
            scheduled,
            self.dead_letters.len(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLockError {
    /// `com.microsoft:session-cannot-be-locked`
    CannotBeLocked,
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
