//! Request/response nodes: `$cbs` (`put-token`) and `<entity>/$management` (renew-lock,
//! session lock and state, schedule and cancel, peek, update-disposition), answered on the
//! client's reply link as Microsoft's "request-response-based operations" page describes.
//!
//! Acts on one connection's grants and the shared broker.

use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::Binary as ByteBuf;
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Value};
use uuid::Uuid;

use crate::cbs::{Grant, check_sas, jwt_expiry};
use crate::connection::Conn;
use crate::entities::{Msg, timestamp, to_wire};
use crate::links::Kind;
use crate::queue::{LockError, Settlement};
use crate::wire::WireError;

type Map = OrderedMap<Value, Value>;

struct Reply {
    status: i32,
    description: String,
    condition: Option<&'static str>,
    body: Value,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            description: "OK".into(),
            condition: None,
            body,
        }
    }

    fn error(status: i32, condition: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
            condition: Some(condition),
            body: Value::Null,
        }
    }

    fn lock(e: LockError) -> Self {
        match e {
            LockError::MessageLockLost => Self::error(
                410,
                "com.microsoft:message-lock-lost",
                "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
            ),
            LockError::SessionLockLost => Self::error(
                410,
                "com.microsoft:session-lock-lost",
                "The session lock has expired on the MessageSession.",
            ),
        }
    }
}

fn key(k: &str) -> Value {
    Value::String(k.into())
}

fn map_of(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (key(k), v)).collect())
}

fn field<'a>(body: &'a Map, name: &str) -> Option<&'a Value> {
    body.get(&key(name))
}

fn text(body: &Map, name: &str) -> Option<String> {
    match field(body, name)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(body: &Map, name: &str) -> Option<i64> {
    match field(body, name)? {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

fn list<'a>(body: &'a Map, name: &str) -> Vec<&'a Value> {
    match field(body, name) {
        Some(Value::Array(a)) => a.0.iter().collect(),
        Some(Value::List(l)) => l.iter().collect(),
        _ => Vec::new(),
    }
}

/// Lock tokens arrive as AMQP uuids. Microsoft's SDKs send the GUID of the delivery tag
/// (read in .NET byte order); azservicebus sends the tag's bytes as they are. The first is
/// what the service expects; the second is matched too, so both clients can renew.
fn tokens(body: &Map) -> Vec<(Uuid, Uuid)> {
    list(body, "lock-tokens")
        .into_iter()
        .filter_map(|v| match v {
            Value::Uuid(u) => {
                let bytes = *u.as_inner();
                Some((Uuid::from_bytes(bytes), Uuid::from_bytes_le(bytes)))
            }
            _ => None,
        })
        .collect()
}

fn encode(m: Msg) -> Value {
    Value::Binary(ByteBuf::from(
        serde_amqp::to_vec(&Serializable(m)).unwrap_or_default(),
    ))
}

fn at(value: Option<DateTime<Utc>>) -> Value {
    value
        .map(|t| Value::Timestamp(timestamp(t)))
        .unwrap_or(Value::Null)
}

impl Conn {
    pub(crate) async fn on_request(
        &mut self,
        channel: u16,
        entity: Option<&str>,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        let Ok(Deserializable(request)) = serde_amqp::from_slice::<Deserializable<Msg>>(bytes)
        else {
            return Ok(());
        };
        let props = request.properties.clone().unwrap_or_default();
        let app = request.application_properties.clone().unwrap_or_default();
        let op = match app.0.get("operation") {
            Some(SimpleValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let body = match &request.body {
            Body::Value(AmqpValue(v)) => v.clone(),
            _ => Value::Null,
        };
        let (reply, cbs) = match entity {
            None => (self.put_token(&app, &body), true),
            Some(entity) => {
                let map = match &body {
                    Value::Map(m) => m.clone(),
                    _ => Map::default(),
                };
                (self.management(entity, &op, &map), false)
            }
        };
        let (code_key, text_key) = if cbs {
            ("status-code", "status-description")
        } else {
            ("statusCode", "statusDescription")
        };
        let mut app_props = ApplicationProperties::default();
        app_props
            .0
            .insert(code_key.into(), SimpleValue::Int(reply.status));
        app_props
            .0
            .insert(text_key.into(), SimpleValue::String(reply.description));
        if let Some(c) = reply.condition {
            app_props
                .0
                .insert("errorCondition".into(), SimpleValue::Symbol(c.into()));
        }
        let response: Msg = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(MessageId::String(Uuid::new_v4().to_string())),
                correlation_id: props.message_id.clone(),
                to: props.reply_to.clone(),
                ..Properties::default()
            }),
            application_properties: Some(app_props),
            body: Body::Value(AmqpValue(reply.body)),
            footer: None,
        };
        let reply_to = props.reply_to.unwrap_or_default();
        let target = self.sessions.get(&channel).and_then(|s| {
            let replies = || {
                s.links
                    .values()
                    .filter(|l| matches!(l.kind, Kind::Replies { .. }))
            };
            replies()
                .find(|l| matches!(&l.kind, Kind::Replies { reply_to: r } if *r == reply_to))
                .or_else(|| replies().next())
                .map(|l| l.handle)
        });
        if let Some(handle) = target {
            let tag = ByteBuf::from(Uuid::new_v4().as_bytes().to_vec());
            self.transfer(channel, handle, response, tag, true).await?;
        }
        Ok(())
    }

    fn put_token(&mut self, app: &ApplicationProperties, body: &Value) -> Reply {
        let get = |k: &str| match app.0.get(k) {
            Some(SimpleValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let (kind, audience) = (get("type"), get("name"));
        let Value::String(token) = body else {
            return Reply::error(400, "amqp:invalid-field", "the token must be a string");
        };
        if self.broker.faults.refusing_tokens() {
            return Reply::error(401, "amqp:unauthorized-access", "token refused (fault)");
        }
        let now = Utc::now();
        let grant = if kind == "jwt" {
            let expires = match &self.config.jwt_check {
                Some(check) => check(token, &audience),
                None => Ok(jwt_expiry(token).unwrap_or(now + chrono::Duration::hours(1))),
            };
            expires.map(|expires| Grant {
                audience: audience.clone(),
                expires,
            })
        } else {
            check_sas(token, &self.config.key_name, &self.config.key, now)
        };
        match grant {
            Ok(mut grant) => {
                if let Some(limit) = self.broker.faults.token_lifetime() {
                    let cap = now + chrono::Duration::from_std(limit).unwrap_or_default();
                    grant.expires = grant.expires.min(cap);
                }
                // The put-token names the audience the client will use the token for.
                grant.audience = audience;
                self.grants.retain(|g| g.audience != grant.audience);
                self.grants.push(grant);
                Reply {
                    status: 202,
                    description: "Accepted".into(),
                    condition: None,
                    body: Value::Null,
                }
            }
            Err(why) => Reply::error(
                401,
                "amqp:unauthorized-access",
                format!("InvalidSignature: {why}"),
            ),
        }
    }

    fn management(&mut self, entity: &str, op: &str, body: &Map) -> Reply {
        if !self.authorised(entity) {
            return Reply::error(401, "amqp:unauthorized-access", "Unauthorized access.");
        }
        let now = Utc::now();
        let (path, dlq) = match entity.strip_suffix("/$deadletterqueue") {
            Some(p) => (p, true),
            None => (entity, false),
        };
        let mut state = self.broker.lock();
        let Some(q) = state.queues.get_mut(path) else {
            drop(state);
            if self.broker.is_topic(entity) && op == "com.microsoft:schedule-message" {
                return self.schedule_on_topic(entity, body);
            }
            return Reply::error(
                404,
                "amqp:not-found",
                format!("The messaging entity '{entity}' could not be found."),
            );
        };
        let reply = match op {
            "com.microsoft:renew-lock" => {
                let mut expirations = Vec::new();
                for (standard, swapped) in tokens(body) {
                    match q
                        .renew_message_lock(standard, now)
                        .or_else(|_| q.renew_message_lock(swapped, now))
                    {
                        Ok(until) => expirations.push(Value::Timestamp(timestamp(until))),
                        Err(e) => return Reply::lock(e),
                    }
                }
                Reply::ok(map_of(vec![(
                    "expirations",
                    Value::Array(Array::from(expirations)),
                )]))
            }
            "com.microsoft:renew-session-lock" => {
                let session = text(body, "session-id").unwrap_or_default();
                match q.renew_session_lock(&session, now) {
                    Ok(until) => Reply::ok(map_of(vec![("expiration", at(Some(until)))])),
                    Err(e) => Reply::lock(e),
                }
            }
            "com.microsoft:get-session-state" => {
                let session = text(body, "session-id").unwrap_or_default();
                let state = q
                    .session_state(&session)
                    .map(|b| Value::Binary(ByteBuf::from(b)))
                    .unwrap_or(Value::Null);
                Reply::ok(map_of(vec![("session-state", state)]))
            }
            "com.microsoft:set-session-state" => {
                let session = text(body, "session-id").unwrap_or_default();
                let value = match field(body, "session-state") {
                    Some(Value::Binary(b)) => Some(b.to_vec()),
                    _ => None,
                };
                q.set_session_state(&session, value);
                Reply::ok(map_of(vec![]))
            }
            "com.microsoft:peek-message" => {
                let from = number(body, "from-sequence-number").unwrap_or(0);
                let count = number(body, "message-count").unwrap_or(1).max(0) as usize;
                let session = text(body, "session-id");
                let found = q.peek(dlq, from, count, session.as_deref());
                if found.is_empty() {
                    Reply {
                        status: 204,
                        description: "No Content".into(),
                        condition: None,
                        body: Value::Null,
                    }
                } else {
                    let messages = found
                        .iter()
                        .map(|m| map_of(vec![("message", encode(to_wire(m, false)))]))
                        .collect();
                    Reply::ok(map_of(vec![("messages", Value::List(messages))]))
                }
            }
            "com.microsoft:cancel-scheduled-message" => {
                for n in list(body, "sequence-numbers") {
                    if let Value::Long(n) = n {
                        q.cancel_scheduled(*n, now);
                    }
                }
                Reply::ok(map_of(vec![]))
            }
            "com.microsoft:update-disposition" => {
                let status = text(body, "disposition-status").unwrap_or_default();
                let how = match status.as_str() {
                    "completed" => Settlement::Complete,
                    "abandoned" => Settlement::Abandon { count: true },
                    "suspended" => Settlement::DeadLetter {
                        reason: text(body, "deadletter-reason"),
                        description: text(body, "deadletter-description"),
                    },
                    _ => {
                        return Reply::error(
                            400,
                            "amqp:not-implemented",
                            format!("disposition {status:?}"),
                        );
                    }
                };
                for (standard, swapped) in tokens(body) {
                    if let Err(e) = q
                        .settle(standard, how.clone(), None, now)
                        .or_else(|_| q.settle(swapped, how.clone(), None, now))
                    {
                        return Reply::lock(e);
                    }
                }
                Reply::ok(map_of(vec![]))
            }
            "com.microsoft:schedule-message" => {
                drop(state);
                return self.schedule_on_topic(entity, body);
            }
            other => Reply::error(
                400,
                "amqp:not-implemented",
                format!("operation {other:?} is not implemented by the peer"),
            ),
        };
        drop(state);
        self.broker.changed.notify_waiters();
        reply
    }

    /// `com.microsoft:schedule-message`: each entry's `message` is an encoded AMQP message
    /// carrying `x-opt-scheduled-enqueue-time`.
    fn schedule_on_topic(&mut self, entity: &str, body: &Map) -> Reply {
        let mut numbers = Vec::new();
        for entry in list(body, "messages") {
            let Value::Map(entry) = entry else { continue };
            let Some(Value::Binary(bytes)) = entry.get(&key("message")) else {
                continue;
            };
            let Ok(Deserializable(message)) = serde_amqp::from_slice::<Deserializable<Msg>>(bytes)
            else {
                return Reply::error(400, "amqp:decode-error", "undecodable message");
            };
            match self.broker.send(entity, message, Utc::now()) {
                Ok(seqs) => numbers.push(Value::Long(seqs.first().copied().unwrap_or_default())),
                Err(_) => {
                    return Reply::error(
                        404,
                        "amqp:not-found",
                        format!("The messaging entity '{entity}' could not be found."),
                    );
                }
            }
        }
        Reply::ok(map_of(vec![(
            "sequence-numbers",
            Value::Array(Array::from(numbers)),
        )]))
    }
}
