//! The access tokens the Entra simulator issues and the check resource servers (the ARM
//! simulator) make of them. They are JWT-shaped like Entra's v1 tokens for ARM (`aud`, `iss`,
//! `tid`, `appid`/`azp`, `oid`, `iat`/`nbf`/`exp`), but signed HS256 with this process's key, so
//! only this process can verify them. The clock is a parameter: no I/O here.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::jwt::{JwtError, Signer};

/// Who a token is for and what it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub tenant_id: String,
    pub client_id: String,
    /// The principal (object) id of the application or managed identity.
    pub object_id: String,
    /// The resource, e.g. `https://management.azure.com` for the scope
    /// `https://management.azure.com/.default`.
    pub audience: String,
    /// The managed identity's ARM id, when the application is one.
    pub mi_resource_id: Option<String>,
}

/// The claims of a token that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessClaims {
    pub audience: String,
    pub tenant_id: String,
    pub client_id: String,
    pub object_id: String,
    pub expires: DateTime<Utc>,
    /// Every claim, as issued.
    pub all: Map<String, Value>,
}

/// Why a resource server refuses a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not a JWT.
    Malformed(String),
    /// Not signed by this simulator.
    BadSignature,
    /// Signed here, but its `exp` has passed.
    Expired { expired_at: DateTime<Utc> },
    /// Signed here, but its `nbf` has not come yet.
    NotYetValid,
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRejection::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenRejection::BadSignature => f.write_str("not signed by this Entra simulator"),
            TokenRejection::Expired { expired_at } => write!(f, "expired at {expired_at}"),
            TokenRejection::NotYetValid => f.write_str("not valid yet (nbf)"),
        }
    }
}

/// Makes access tokens.
#[derive(Debug, Clone)]
pub(super) struct Issuer {
    pub(super) signer: Signer,
}

impl Issuer {
    /// A signed token for `grant`, valid from `now` for `lifetime_secs`.
    pub(super) fn issue(
        &self,
        grant: &TokenGrant,
        now: DateTime<Utc>,
        lifetime_secs: u64,
    ) -> String {
        let iat = now.timestamp();
        let exp = iat.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX));
        let mut claims = json!({
            "aud": grant.audience,
            "iss": format!("https://sts.windows.net/{}/", grant.tenant_id),
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "tid": grant.tenant_id,
            "appid": grant.client_id,
            "azp": grant.client_id,
            // 2: the client authenticated with a certificate or an assertion, not a secret.
            "appidacr": "2",
            "idtyp": "app",
            "oid": grant.object_id,
            "sub": grant.object_id,
            "uti": Uuid::new_v4().simple().to_string(),
            "ver": "1.0",
        });
        if let Some(id) = &grant.mi_resource_id {
            claims["xms_mirid"] = json!(id);
        }
        self.signer.sign(&claims)
    }
}

/// Checks tokens of one Entra simulator; cheap to clone, hand it to resource servers.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    pub(super) signer: Signer,
    pub(super) authority: String,
}

impl TokenVerifier {
    /// The authority resource servers name in their `WWW-Authenticate` challenges: the Entra
    /// simulator's URL with a trailing slash.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The claims of `token` if this simulator issued it and it is valid at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenRejection> {
        let all = self.signer.verify(token).map_err(|e| match e {
            JwtError::Malformed(why) => TokenRejection::Malformed(why),
            JwtError::BadSignature => TokenRejection::BadSignature,
        })?;
        let text = |name: &str| {
            all.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let time = |name: &str| all.get(name).and_then(Value::as_i64);
        let Some(expires) = time("exp").and_then(|t| Utc.timestamp_opt(t, 0).single()) else {
            return Err(TokenRejection::Malformed("no exp".into()));
        };
        if expires <= now {
            return Err(TokenRejection::Expired {
                expired_at: expires,
            });
        }
        if time("nbf").is_some_and(|nbf| nbf > now.timestamp()) {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(AccessClaims {
            audience: text("aud"),
            tenant_id: text("tid"),
            client_id: text("appid"),
            object_id: text("oid"),
            expires,
            all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> TokenGrant {
        TokenGrant {
            tenant_id: "t".into(),
            client_id: "c".into(),
            object_id: "o".into(),
            audience: "https://management.azure.com".into(),
            mi_resource_id: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let signer = Signer::random();
        let issuer = Issuer {
            signer: signer.clone(),
        };
        let verifier = TokenVerifier {
            signer,
            authority: "https://127.0.0.1:1/".into(),
        };
        let now = Utc::now();
        let token = issuer.issue(&grant(), now, 60);
        let claims = verifier.verify(&token, now);
        assert_eq!(
            claims
                .as_ref()
                .map(|c| (c.client_id.as_str(), c.audience.as_str())),
            Ok(("c", "https://management.azure.com"))
        );
        let later = now + chrono::Duration::seconds(61);
        assert!(matches!(
            verifier.verify(&token, later),
            Err(TokenRejection::Expired { .. })
        ));
    }
}
