//! JSON Web Tokens, as little of them as the Entra simulator needs: reading the claims of a client
//! assertion (without checking its signature: see the module doc of [`super`]) and signing and
//! verifying the access tokens it issues (HS256 with a key made at start, known only to this
//! process). Pure functions of their inputs: no clock, no I/O.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// base64url without padding, as JWTs use it; padded input is accepted too, since some issuers
/// (and hand-made test tokens) pad.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `kid` of the simulator's signing key, so a reader of a token can tell where it came from.
pub const KEY_ID: &str = "entra-sim-hs256";

pub fn b64url(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Why a token could not be read or was not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url segments of JSON objects.
    Malformed(String),
    /// Well formed, but not signed with this simulator's key.
    BadSignature,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed JWT: {why}"),
            JwtError::BadSignature => f.write_str("the signature does not verify"),
        }
    }
}

fn segment_json(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = B64
        .decode(segment)
        .map_err(|e| JwtError::Malformed(format!("the {what} is not base64url: {e}")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
        Err(e) => Err(JwtError::Malformed(format!("the {what} is not JSON: {e}"))),
    }
}

fn split(token: &str) -> Result<[&str; 3], JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok([h, p, s]),
        _ => Err(JwtError::Malformed(
            "a JWT is three base64url segments separated by dots".into(),
        )),
    }
}

/// The claims of a JWT, read without verifying its signature (the header must still be JSON).
pub fn claims_unverified(token: &str) -> Result<Map<String, Value>, JwtError> {
    let [header, payload, _] = split(token.trim())?;
    segment_json(header, "header")?;
    segment_json(payload, "payload")
}

/// A JWT with these claims and a signature nobody checks: a stand-in for a Kubernetes
/// service-account token in tests (the Entra simulator reads assertions without verifying them).
pub fn unsigned(claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "unsigned-test-assertion"});
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-signature")
    )
}

/// Signs and verifies the simulator's access tokens.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key signs every token the simulator hands out; it never goes to a log.
        f.write_str("Signer { key: <hidden> }")
    }
}

impl Signer {
    /// A signer with a fresh random key.
    pub fn random() -> Self {
        Self {
            key: rand::random(),
        }
    }

    fn mac(&self, signing_input: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(signing_input.as_bytes());
        mac
    }

    /// `header.payload.signature` for these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "HS256", "kid": KEY_ID});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self.mac(&input).finalize().into_bytes();
        format!("{input}.{}", b64url(&signature))
    }

    /// The claims of a token this signer made; any other token is refused.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        let [header, payload, signature] = split(token.trim())?;
        let head = segment_json(header, "header")?;
        if head.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(JwtError::BadSignature);
        }
        let signature = B64.decode(signature).map_err(|_| JwtError::BadSignature)?;
        // `verify_slice` compares in constant time.
        self.mac(&format!("{header}.{payload}"))
            .verify_slice(&signature)
            .map_err(|_| JwtError::BadSignature)?;
        segment_json(payload, "payload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_and_gives_its_claims_back() {
        let signer = Signer::random();
        let token = signer.sign(&json!({"aud": "x", "exp": 5}));
        let claims = signer.verify(&token);
        assert_eq!(claims.map(|c| c.get("aud").cloned()), Ok(Some(json!("x"))));
    }

    #[test]
    fn another_key_or_a_changed_payload_does_not_verify() {
        let signer = Signer::random();
        let token = signer.sign(&json!({"aud": "x"}));
        assert_eq!(Signer::random().verify(&token), Err(JwtError::BadSignature));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64url(br#"{"aud":"y"}"#), parts[2]);
        assert_eq!(signer.verify(&forged), Err(JwtError::BadSignature));
    }

    #[test]
    fn claims_are_read_from_an_unsigned_assertion_and_garbage_is_malformed() {
        let token = format!(
            "{}.{}.",
            b64url(br#"{"alg":"RS256"}"#),
            b64url(br#"{"sub":"system:serviceaccount:a:b"}"#)
        );
        assert_eq!(
            claims_unverified(&token).map(|c| c.get("sub").cloned()),
            Ok(Some(json!("system:serviceaccount:a:b")))
        );
        assert!(matches!(
            claims_unverified("not-a-jwt"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            claims_unverified("a.b.c"),
            Err(JwtError::Malformed(_))
        ));
    }
}
