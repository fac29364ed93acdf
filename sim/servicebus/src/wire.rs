//! Frames on the socket: the protocol headers, SASL frames and AMQP frames (performative plus
//! payload), encoded and decoded with fe2o3-amqp's frame codecs and types.
//!
//! Touches the one TCP stream it is handed, nothing else. Why not fe2o3-amqp's acceptor: its
//! links pick their own 4-byte delivery tags (Service Bus lock tokens are 16-byte GUIDs, and
//! Microsoft's SDKs read the lock token from the tag) and settle dispositions themselves (a
//! peer must answer a settlement with `com.microsoft:message-lock-lost`). So the peer keeps
//! fe2o3's codecs and types and runs connection, session and link state itself.

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, Encoder};

pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("the client sent protocol header {0:?}, expected AMQP 1.0 or its SASL layer")]
    Header([u8; 8]),
}

impl onboarding_core::Classify for WireError {
    fn class(&self) -> onboarding_core::ErrorClass {
        onboarding_core::ErrorClass::Transient
    }
}

pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 8], WireError> {
    let mut header = [0u8; 8];
    r.read_exact(&mut header).await?;
    Ok(header)
}

/// One frame's bytes after the size field (doff, type, channel, body), or `None` at EOF.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<BytesMut>, WireError> {
    let size = match r.read_u32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !(8..=max.max(512)).contains(&size) {
        return Err(WireError::Decode(format!("frame size {size}")));
    }
    let mut buf = vec![0u8; (size - 4) as usize];
    r.read_exact(&mut buf).await?;
    Ok(Some(BytesMut::from(&buf[..])))
}

pub fn decode_sasl(mut frame: BytesMut) -> Result<sasl::Frame, WireError> {
    sasl::FrameCodec {}
        .decode(&mut frame)
        .map_err(|e| WireError::Decode(e.to_string()))?
        .ok_or_else(|| WireError::Decode("empty SASL frame".into()))
}

pub fn encode_sasl(frame: sasl::Frame) -> Result<Vec<u8>, WireError> {
    let mut body = BytesMut::new();
    sasl::FrameCodec {}
        .encode(frame, &mut body)
        .map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(with_size(&body))
}

/// An AMQP frame: its channel and body (`Empty` for a heartbeat).
pub fn decode_amqp(mut frame: BytesMut) -> Result<(u16, FrameBody), WireError> {
    let f = FrameDecoder {}
        .decode(&mut frame)
        .map_err(|e| WireError::Decode(e.to_string()))?
        .ok_or_else(|| WireError::Decode("empty AMQP frame".into()))?;
    Ok((f.channel, f.body))
}

fn with_size(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_u32((body.len() + 4) as u32);
    out.extend_from_slice(body);
    out
}

/// An AMQP frame with `performative` and `payload` (transfers only), not split.
pub fn encode_amqp<P: Serialize>(
    channel: u16,
    performative: &P,
    payload: &[u8],
) -> Result<Vec<u8>, WireError> {
    let mut body = vec![2u8, 0u8];
    body.extend_from_slice(&channel.to_be_bytes());
    let encoded = serde_amqp::to_vec(performative).map_err(|e| WireError::Decode(e.to_string()))?;
    body.extend_from_slice(&encoded);
    body.extend_from_slice(payload);
    Ok(with_size(&body))
}

/// A heartbeat: an AMQP frame with no body.
pub fn empty_frame() -> Vec<u8> {
    with_size(&[2, 0, 0, 0])
}
