//! One client connection: SASL, open, sessions, and the loop that reads frames, delivers
//! messages to links with credit, answers pending session accepts, detaches links whose token
//! expired, and drops the socket when the tests say so.
//!
//! Touches the TCP stream it is handed and the shared [`Broker`]; link semantics are in
//! `links`, `$cbs` and `$management` requests in `requests`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp_types::definitions::{Error as AmqpErr, ErrorCondition, Fields};
use fe2o3_amqp_types::performatives::{Begin, Close, Detach, End, Flow, Open};
use fe2o3_amqp_types::primitives::Symbol;
use fe2o3_amqp_types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::PeerConfig;
use crate::cbs::Grant;
use crate::entities::Broker;
use crate::links::Link;
use crate::wire::{self, AMQP_HEADER, SASL_HEADER, WireError};

/// Our frame size limit, offered in `open`.
const MAX_FRAME: u32 = 256 * 1024;
/// Session windows: large enough that neither side ever waits on them.
pub(crate) const WINDOW: u32 = 100_000;

pub(crate) struct Session {
    pub next_outgoing_id: u32,
    pub next_incoming_id: u32,
    pub next_delivery_id: u32,
    pub links: HashMap<u32, Link>,
}

pub(crate) struct Conn {
    pub broker: Arc<Broker>,
    pub config: Arc<PeerConfig>,
    writer: OwnedWriteHalf,
    pub remote_max_frame: usize,
    pub sessions: HashMap<u16, Session>,
    pub grants: Vec<Grant>,
    heartbeat: Option<Duration>,
    last_sent: tokio::time::Instant,
}

pub(crate) fn error(condition: &str, description: impl Into<String>) -> AmqpErr {
    AmqpErr {
        condition: ErrorCondition::Custom(Symbol::from(condition)),
        description: Some(description.into()),
        info: None,
    }
}

fn unique_link_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Conn {
    pub async fn send<P: Serialize>(
        &mut self,
        channel: u16,
        performative: &P,
    ) -> Result<(), WireError> {
        let bytes = wire::encode_amqp(channel, performative, &[])?;
        self.write(&bytes).await
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.writer.write_all(bytes).await?;
        self.last_sent = tokio::time::Instant::now();
        Ok(())
    }

    pub fn new_link_id() -> u64 {
        unique_link_id()
    }

    /// The session flow fields for a frame we send on `channel`.
    pub fn session_flow(&self, channel: u16) -> Flow {
        let s = self.sessions.get(&channel);
        Flow {
            next_incoming_id: s.map(|s| s.next_incoming_id),
            incoming_window: WINDOW,
            next_outgoing_id: s.map(|s| s.next_outgoing_id).unwrap_or(0),
            outgoing_window: WINDOW,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }

    /// Is `entity` covered by an unexpired token put on `$cbs`?
    pub fn authorised(&self, entity: &str) -> bool {
        let now = Utc::now();
        self.grants
            .iter()
            .any(|g| g.expires > now && crate::cbs::covers(&g.audience, entity))
    }

    async fn handle_frame(&mut self, channel: u16, body: FrameBody) -> Result<bool, WireError> {
        match body {
            FrameBody::Begin(begin) => {
                let reply = Begin {
                    remote_channel: Some(channel),
                    next_outgoing_id: 0,
                    incoming_window: WINDOW,
                    outgoing_window: WINDOW,
                    handle_max: begin.handle_max,
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                };
                self.sessions.insert(
                    channel,
                    Session {
                        next_outgoing_id: 0,
                        next_incoming_id: begin.next_outgoing_id,
                        next_delivery_id: 0,
                        links: HashMap::new(),
                    },
                );
                self.send(channel, &reply).await?;
            }
            FrameBody::Attach(attach) => self.on_attach(channel, attach).await?,
            FrameBody::Flow(flow) => self.on_flow(channel, flow).await?,
            FrameBody::Transfer {
                performative,
                payload,
            } => self.on_transfer(channel, performative, payload).await?,
            FrameBody::Disposition(d) => self.on_disposition(channel, d).await?,
            FrameBody::Detach(detach) => {
                let handle = detach.handle.0;
                if let Some(link) = self
                    .sessions
                    .get_mut(&channel)
                    .and_then(|s| s.links.remove(&handle))
                {
                    self.release_link(&link);
                    let reply = Detach {
                        handle: detach.handle,
                        closed: detach.closed,
                        error: None,
                    };
                    self.send(channel, &reply).await?;
                }
            }
            FrameBody::End(_) => {
                if let Some(session) = self.sessions.remove(&channel) {
                    for link in session.links.values() {
                        self.release_link(link);
                    }
                }
                self.send(channel, &End { error: None }).await?;
            }
            FrameBody::Close(_) => {
                self.release_all();
                self.send(0, &Close { error: None }).await?;
                return Ok(false);
            }
            FrameBody::Open(_) | FrameBody::Empty => {}
        }
        Ok(true)
    }

    pub fn release_all(&mut self) {
        let sessions: Vec<Session> = self.sessions.drain().map(|(_, s)| s).collect();
        for s in sessions {
            for link in s.links.values() {
                self.release_link(link);
            }
        }
    }

    /// Periodic work: heartbeats, expired tokens, pending accepts, deliveries.
    async fn tick(&mut self) -> Result<(), WireError> {
        if let Some(every) = self.heartbeat
            && self.last_sent.elapsed() >= every
        {
            self.write(&wire::empty_frame()).await?;
        }
        self.detach_unauthorised().await?;
        self.pump().await
    }
}

async fn sasl(stream: &mut TcpStream) -> Result<(), WireError> {
    stream.write_all(&SASL_HEADER).await?;
    let mechanisms = SaslMechanisms {
        sasl_server_mechanisms: vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("PLAIN"),
            Symbol::from("ANONYMOUS"),
        ]
        .into(),
    };
    stream
        .write_all(&wire::encode_sasl(sasl::Frame::Mechanisms(mechanisms))?)
        .await?;
    let Some(frame) = wire::read_frame(stream, 65536).await? else {
        return Err(WireError::Decode("closed during SASL".into()));
    };
    // Any mechanism is fine: authorisation is the CBS token, as on Service Bus.
    let _init = wire::decode_sasl(frame)?;
    let outcome = SaslOutcome {
        code: SaslCode::Ok,
        additional_data: None,
    };
    stream
        .write_all(&wire::encode_sasl(sasl::Frame::Outcome(outcome))?)
        .await?;
    Ok(())
}

/// Serve one client until it closes, the socket breaks, or the tests drop connections.
pub(crate) async fn serve(
    mut stream: TcpStream,
    broker: Arc<Broker>,
    config: Arc<PeerConfig>,
) -> Result<(), WireError> {
    let mut drops = broker.faults.drops();
    let mut header = wire::read_header(&mut stream).await?;
    if header == SASL_HEADER {
        sasl(&mut stream).await?;
        header = wire::read_header(&mut stream).await?;
    }
    if header != AMQP_HEADER {
        return Err(WireError::Header(header));
    }
    stream.write_all(&AMQP_HEADER).await?;
    let (mut reader, writer) = stream.into_split();
    let open = match wire::read_frame(&mut reader, MAX_FRAME).await? {
        Some(f) => match wire::decode_amqp(f)? {
            (_, FrameBody::Open(open)) => open,
            (_, other) => return Err(WireError::Decode(format!("expected open, got {other:?}"))),
        },
        None => return Ok(()),
    };
    let mut conn = Conn {
        broker: broker.clone(),
        config,
        writer,
        remote_max_frame: (open.max_frame_size.0 as usize).clamp(512, MAX_FRAME as usize),
        sessions: HashMap::new(),
        grants: Vec::new(),
        heartbeat: open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms) / 2)),
        last_sent: tokio::time::Instant::now(),
    };
    let reply = Open {
        container_id: "servicebus-sim".into(),
        hostname: None,
        max_frame_size: MAX_FRAME.into(),
        channel_max: 4999.into(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None::<Fields>,
    };
    conn.send(0, &reply).await?;

    // Reading in its own task keeps the select below cancel-safe.
    let (tx, mut rx) = mpsc::channel(64);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = wire::read_frame(&mut reader, MAX_FRAME).await;
            let stop = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || stop {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let result = loop {
        let changed = broker.changed.notified();
        tokio::select! {
            frame = rx.recv() => {
                let frame = match frame {
                    Some(Ok(Some(f))) => f,
                    Some(Err(e)) => break Err(e),
                    _ => break Ok(()),
                };
                let (channel, body) = match wire::decode_amqp(frame) {
                    Ok(x) => x,
                    Err(e) => break Err(e),
                };
                match conn.handle_frame(channel, body).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
                if let Err(e) = conn.pump().await {
                    break Err(e);
                }
            }
            _ = tick.tick() => {
                if let Err(e) = conn.tick().await {
                    break Err(e);
                }
            }
            _ = changed => {
                if let Err(e) = conn.pump().await {
                    break Err(e);
                }
            }
            _ = drops.changed() => {
                tracing::info!("dropping a connection (fault)");
                break Ok(());
            }
        }
    };
    read_task.abort();
    conn.release_all();
    broker.changed.notify_waiters();
    result
}
