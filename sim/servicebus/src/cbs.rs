//! Claims-based security (`$cbs` `put-token`): checking a SAS token against the configured key,
//! or a JWT (accepted, optionally checked by the test's callback), and the audiences a
//! connection is authorised for until when.
//!
//! Pure: token text and `now` in, a verdict out.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Checks a JWT for an audience; returns its expiry, or why it is refused.
pub type JwtCheck = Arc<dyn Fn(&str, &str) -> Result<DateTime<Utc>, String> + Send + Sync>;

/// What a token grants: the audience (a namespace or entity URI) until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub audience: String,
    pub expires: DateTime<Utc>,
}

fn query_value<'a>(token: &'a str, key: &str) -> Option<&'a str> {
    token
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `SharedAccessSignature sr=<uri>&sig=<sig>&se=<expiry>&skn=<key name>`: the signature is
/// HMAC-SHA256 with the key over `<sr as sent>\n<se>`, as the SDKs compute it.
pub fn check_sas(
    token: &str,
    key_name: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Grant, String> {
    let body = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let sr = query_value(body, "sr").ok_or("no sr")?;
    let sig = query_value(body, "sig").ok_or("no sig")?;
    let se = query_value(body, "se").ok_or("no se")?;
    let skn = query_value(body, "skn").ok_or("no skn")?;
    if decode(skn) != key_name {
        return Err(format!("unknown key name {:?}", decode(skn)));
    }
    let expires_secs: i64 = se.parse().map_err(|_| format!("bad expiry {se:?}"))?;
    let expires = DateTime::<Utc>::from_timestamp(expires_secs, 0).ok_or("bad expiry")?;
    if expires <= now {
        return Err("the token has expired".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if decode(sig) != expected {
        return Err("the signature does not match the key".into());
    }
    Ok(Grant {
        audience: decode(sr),
        expires,
    })
}

/// The `exp` claim of a JWT, if it has one (no signature check: that is the callback's).
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    DateTime::<Utc>::from_timestamp(claims.get("exp")?.as_i64()?, 0)
}

/// Does a grant for `audience` cover `entity` (a lower-cased entity path)? A namespace-wide
/// audience covers everything; an entity audience covers that entity and what is under it.
pub fn covers(audience: &str, entity: &str) -> bool {
    let granted = crate::entities::parse_address(audience).entity;
    granted.is_empty() || entity == granted || entity.starts_with(&format!("{granted}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(uri: &str, key: &str, se: i64) -> String {
        let sr: String = url::form_urlencoded::byte_serialize(uri.as_bytes()).collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key size");
        mac.update(format!("{sr}\n{se}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=Root")
    }

    #[test]
    fn a_sas_token_signed_with_the_key_is_accepted_until_it_expires() {
        let now = Utc::now();
        let se = now.timestamp() + 3600;
        let token = sign("sb://127.0.0.1:5672/queue", "secret", se);
        let grant = check_sas(&token, "Root", "secret", now).expect("valid");
        assert_eq!(grant.audience, "sb://127.0.0.1:5672/queue");
        assert!(covers(&grant.audience, "queue"));
        assert!(!covers(&grant.audience, "other"));
        assert!(check_sas(&token, "Root", "other-key", now).is_err());
        assert!(check_sas(&token, "Root", "secret", now + chrono::Duration::hours(2)).is_err());
    }

    #[test]
    fn a_namespace_audience_covers_every_entity() {
        assert!(covers("sb://host/", "topic/subscriptions/sub"));
        assert!(covers("amqp://host:1/topic", "topic/subscriptions/sub"));
    }
}
