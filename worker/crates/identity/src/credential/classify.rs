//! Reading a failed token request: Entra's OAuth error (`error`), its numeric `error_codes` and
//! the HTTP status decide whether the failure passes by itself (an outage, throttling, a
//! federated credential still propagating) or needs someone to fix a setting, and what to say.
//! Never the wording of a message.
//!
//! May touch: nothing; pure.

use azure_core_v1::error::ErrorKind;
use serde::Deserialize;

/// AADSTS codes that pass by themselves: a federated credential or identity created moments ago
/// is not yet known everywhere (70021, 700213; 700016 for a new identity), and an assertion that
/// expired before the kubelet rotated the file (700024).
const PASSING_CODES: [i64; 4] = [70021, 700213, 700016, 700024];

/// OAuth errors that pass by themselves (RFC 6749 §5.2 and Entra's additions).
const PASSING_ERRORS: [&str; 2] = ["temporarily_unavailable", "server_error"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EntraError {
    error: String,
    error_description: String,
    error_codes: Vec<i64>,
}

/// What a failed fetch means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reading {
    /// Passes by itself; trying again after a while is all it takes.
    pub passes: bool,
    /// What happened, for the operator.
    pub detail: String,
}

pub(super) fn read(err: &azure_core_v1::Error) -> Reading {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core_v1::Error>() {
            match az.kind() {
                ErrorKind::HttpResponse {
                    status,
                    raw_response,
                    ..
                } => {
                    let status = u16::from(*status);
                    let body: EntraError = raw_response
                        .as_ref()
                        .and_then(|r| serde_json::from_slice(r.body().as_ref()).ok())
                        .unwrap_or_default();
                    return http_failure(status, &body);
                }
                ErrorKind::Connection | ErrorKind::Io => {
                    return Reading {
                        passes: true,
                        detail: format!("{az}; the worker tries again"),
                    };
                }
                _ => {}
            }
        }
        current = e.source();
    }
    // The process-based credentials (`az`) fail without an HTTP status: nothing says it passes.
    Reading {
        passes: false,
        detail: err.to_string(),
    }
}

fn http_failure(status: u16, body: &EntraError) -> Reading {
    let passes = matches!(status, 408 | 429 | 500..=599)
        || PASSING_ERRORS.contains(&body.error.as_str())
        || body.error_codes.iter().any(|c| PASSING_CODES.contains(c));
    let said = if body.error.is_empty() {
        format!("Entra answered {status}")
    } else {
        format!(
            "Entra answered {status} {}: {}",
            body.error,
            body.error_description.trim()
        )
    };
    let what_to_do = if passes {
        if body.error_codes.iter().any(|c| [70021, 700213].contains(c)) {
            "; a federated credential takes seconds to a minute to reach every Entra instance after it is created, so the worker tries again; if this lasts, check the credential's issuer, subject and audience"
        } else {
            "; this usually passes, the worker tries again"
        }
    } else {
        "; check the credential's tenant id and client id, and that the identity's federated credential names this cluster's OIDC issuer and the worker's service account"
    };
    Reading {
        passes,
        detail: format!("{said}{what_to_do}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, codes: &[i64]) -> EntraError {
        EntraError {
            error: error.into(),
            error_description: "AADSTSnnn: text".into(),
            error_codes: codes.to_vec(),
        }
    }

    #[test]
    fn a_federated_credential_still_propagating_passes() {
        let r = http_failure(400, &body("invalid_client", &[70021]));
        assert!(r.passes);
        assert!(r.detail.contains("seconds to a minute"), "{}", r.detail);
        assert!(http_failure(401, &body("invalid_client", &[700213])).passes);
    }

    #[test]
    fn an_outage_or_throttling_passes() {
        assert!(http_failure(503, &EntraError::default()).passes);
        assert!(http_failure(429, &EntraError::default()).passes);
        assert!(http_failure(400, &body("temporarily_unavailable", &[])).passes);
    }

    #[test]
    fn a_wrong_secret_or_unknown_tenant_needs_a_fix_and_says_which() {
        let r = http_failure(401, &body("invalid_client", &[7000215]));
        assert!(!r.passes);
        assert!(r.detail.contains("client id"), "{}", r.detail);
        assert!(!http_failure(400, &body("invalid_request", &[90002])).passes);
    }

    #[test]
    fn the_wording_of_a_description_decides_nothing() {
        // AADSTS70021 in the text but not in error_codes: the codes are what count.
        let b = EntraError {
            error: "invalid_request".into(),
            error_description: "AADSTS70021: looks passing".into(),
            error_codes: vec![900144],
        };
        assert!(!http_failure(400, &b).passes);
    }
}
