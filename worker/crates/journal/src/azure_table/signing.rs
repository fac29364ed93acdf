//! Authorization of one Table service request: Shared Key signing (HMAC-SHA256 of the Table
//! service's string-to-sign under the account key) or an Entra bearer token for
//! its cloud's storage scope ([`super::STORAGE_SCOPE`] by default).
//!
//! May touch: the account key held in memory and the token credential; nothing else. The key
//! never leaves this module except as a signature.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use crate::JournalError;
use onboarding_core::TokenCredential;

/// How requests are authorized, after the settings were checked.
pub(super) enum Signer {
    SharedKey {
        account: String,
        key: Vec<u8>,
    },
    Bearer {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
}

impl Signer {
    /// The `Authorization` header of a request to `url` sent at `date` (RFC 1123).
    pub(super) async fn authorization(
        &self,
        method: &str,
        content_type: &str,
        date: &str,
        url: &Url,
    ) -> Result<String, JournalError> {
        Ok(match self {
            Signer::SharedKey { account, key } => {
                let to_sign = string_to_sign(
                    method,
                    "",
                    content_type,
                    date,
                    &canonicalized_resource(account, url),
                );
                format!("SharedKey {account}:{}", sign(key, &to_sign))
            }
            Signer::Bearer { credential, scope } => {
                // The worker's own credential failing makes the journal unreachable for it: the
                // readiness probe reports it and the work waits; nothing is refused for good.
                let token = credential
                    .token(scope)
                    .await
                    .map_err(|e| JournalError::Unavailable(e.to_string()))?;
                format!("Bearer {}", token.token)
            }
        })
    }
}

/// Shared Key for the Table service: `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`
/// (no canonicalized headers, unlike Blob and Queue).
fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    canonicalized_resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\n{date}\n{canonicalized_resource}")
}

/// `/<account><encoded URI path>`, plus `?comp=<value>` when the query has `comp`. With Azurite's
/// path-style URLs the account therefore appears twice (`/devstoreaccount1/devstoreaccount1/t`).
fn canonicalized_resource(account: &str, url: &Url) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(name, _)| name == "comp") {
        resource.push_str("?comp=");
        resource.push_str(&comp);
    }
    resource
}

/// Base64 of HMAC-SHA256 of the UTF-8 string under the decoded account key.
fn sign(key: &[u8], string_to_sign: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty key would only sign wrongly.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::AZURITE_KEY;
    use super::*;

    #[test]
    fn the_string_to_sign_has_the_five_table_service_fields() {
        // The layout of Microsoft's "Authorize with Shared Key", Table service section.
        let url = Url::parse("https://myaccount.table.core.windows.net/Tables").unwrap();
        assert_eq!(
            string_to_sign(
                "GET",
                "",
                "",
                "Sun, 11 Oct 2009 19:52:39 GMT",
                &canonicalized_resource("myaccount", &url)
            ),
            "GET\n\n\nSun, 11 Oct 2009 19:52:39 GMT\n/myaccount/Tables"
        );
    }

    #[test]
    fn the_canonicalized_resource_names_the_account_twice_on_azurite_and_keeps_only_comp() {
        let url = Url::parse(
            "http://127.0.0.1:10002/devstoreaccount1/mytable()?$filter=PartitionKey%20eq%20%27a%27&$top=1",
        )
        .unwrap();
        assert_eq!(
            canonicalized_resource("devstoreaccount1", &url),
            "/devstoreaccount1/devstoreaccount1/mytable()"
        );
        let url =
            Url::parse("https://acct.table.core.windows.net/?restype=service&comp=properties")
                .unwrap();
        assert_eq!(
            canonicalized_resource("acct", &url),
            "/acct/?comp=properties"
        );
    }

    #[test]
    fn an_entity_url_keeps_its_quotes_and_escaped_key_as_signed() {
        // The service signs the path exactly as sent; the URL parser must not re-encode it.
        let url = Url::parse(
            "http://127.0.0.1:10002/devstoreaccount1/t1(PartitionKey='journal',RowKey='a~2Fb~3A.c')",
        )
        .unwrap();
        assert_eq!(
            url.path(),
            "/devstoreaccount1/t1(PartitionKey='journal',RowKey='a~2Fb~3A.c')"
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_sha256() {
        // Computed outside Rust: python3 -c "import hmac,hashlib,base64; print(base64.b64encode(
        //   hmac.new(base64.b64decode(KEY), STRING.encode(), hashlib.sha256).digest()).decode())"
        let key = BASE64.decode(AZURITE_KEY).unwrap();
        let to_sign = "POST\n\napplication/json\nMon, 24 Nov 2025 10:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables";
        assert_eq!(sign(&key, to_sign), EXPECTED_SIGNATURE);
    }

    const EXPECTED_SIGNATURE: &str = "rwYu+Fj+8RRNjVMQq8SW3lonwgF9y1dF1H0TNYpfXsM=";

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
