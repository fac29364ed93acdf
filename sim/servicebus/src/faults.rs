//! Faults at the wire that tests switch on through [`Faults`]: dropped connections, hung,
//! delayed or refused link attaches, unanswered sends and requests, refused CBS tokens,
//! shortened token lifetimes. (Early lock expiry is [`crate::ServiceBusPeer::expire_locks_now`]:
//! it acts on the entities.)
//!
//! Pure state behind a mutex plus a watch channel the connections listen on; touches nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug, Default)]
struct State {
    hang_receiver_attaches: u32,
    refuse_receiver_attaches: u32,
    attach_delay: Option<Duration>,
    refuse_tokens_until: Option<Instant>,
    token_lifetime: Option<Duration>,
    hung: u32,
    unanswered_sends: u32,
    unanswered_requests: u32,
}

/// The fault switches of a running peer.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    drops: watch::Sender<u64>,
}

/// What to do with a receiver attach (a client link receiving from an entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachFault {
    None,
    /// Never answer it (until the connection goes away).
    Hang,
    /// Answer with a detach carrying `amqp:internal-error`.
    Refuse,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            drops: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close every open connection (the TCP socket, without an AMQP close), as a broker
    /// restart or a load-balancer reset does. New connections are accepted as usual.
    pub fn drop_connections(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    pub(crate) fn drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    /// Leave the next `n` receiver attaches unanswered, as a broker does when an accept of
    /// the next session never completes.
    pub fn hang_next_receiver_attaches(&self, n: u32) {
        self.state().hang_receiver_attaches = n;
    }

    /// Leave the next `n` messages sent into an entity unanswered and unstored, as a connection
    /// gone silent with the send in flight: the client gets neither a disposition nor an error
    /// on that link.
    pub fn leave_next_sends_unanswered(&self, n: u32) {
        self.state().unanswered_sends = n;
    }

    /// Leave the next `n` requests to `$cbs` or a `$management` node unanswered (neither
    /// settled nor replied to), as [`Faults::leave_next_sends_unanswered`] does for messages.
    pub fn leave_next_requests_unanswered(&self, n: u32) {
        self.state().unanswered_requests = n;
    }

    pub(crate) fn take_unanswered_send(&self) -> bool {
        take_one(&mut self.state().unanswered_sends)
    }

    pub(crate) fn take_unanswered_request(&self) -> bool {
        take_one(&mut self.state().unanswered_requests)
    }

    /// Refuse the next `n` receiver attaches with `amqp:internal-error`.
    pub fn refuse_next_receiver_attaches(&self, n: u32) {
        self.state().refuse_receiver_attaches = n;
    }

    /// Answer every attach only after `delay` (`None`: at once).
    pub fn delay_attaches(&self, delay: Option<Duration>) {
        self.state().attach_delay = delay;
    }

    /// Refuse CBS tokens (`status-code` 401) for `how_long` from now.
    pub fn refuse_tokens_for(&self, how_long: Duration) {
        self.state().refuse_tokens_until = Some(Instant::now() + how_long);
    }

    /// Accept tokens again.
    pub fn accept_tokens(&self) {
        self.state().refuse_tokens_until = None;
    }

    /// Treat every accepted token as expiring after `lifetime` (at most its own expiry): links
    /// authorised by it are detached with `amqp:unauthorized-access` when it runs out.
    pub fn limit_token_lifetime(&self, lifetime: Option<Duration>) {
        self.state().token_lifetime = lifetime;
    }

    /// How many receiver attaches have been left hanging so far.
    pub fn hung_attaches(&self) -> u32 {
        self.state().hung
    }

    pub(crate) fn on_receiver_attach(&self) -> AttachFault {
        let mut s = self.state();
        if s.hang_receiver_attaches > 0 {
            s.hang_receiver_attaches -= 1;
            s.hung += 1;
            AttachFault::Hang
        } else if s.refuse_receiver_attaches > 0 {
            s.refuse_receiver_attaches -= 1;
            AttachFault::Refuse
        } else {
            AttachFault::None
        }
    }

    pub(crate) fn attach_delay(&self) -> Option<Duration> {
        self.state().attach_delay
    }

    pub(crate) fn refusing_tokens(&self) -> bool {
        self.state()
            .refuse_tokens_until
            .is_some_and(|until| Instant::now() < until)
    }

    pub(crate) fn token_lifetime(&self) -> Option<Duration> {
        self.state().token_lifetime
    }
}

/// Count one use of a fault switched on for the next `left` occurrences: whether this one is
/// among them.
fn take_one(left: &mut u32) -> bool {
    let take = *left > 0;
    *left = left.saturating_sub(1);
    take
}
