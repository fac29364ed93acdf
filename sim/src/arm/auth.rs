//! ARM's authentication, when the simulator requires tokens ([`ArmSim::require_tokens`]): the
//! bearer token must be one the Entra simulator issued, unexpired, for ARM's audience. Refusals
//! are ARM's: 401 with its error codes and messages and a `WWW-Authenticate` challenge naming
//! the authority (the Entra simulator). Reads only the request's headers and the verifier.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::responses::arm_error;
use super::{ArmSim, lock};
use crate::entra::{TokenRejection, TokenVerifier};

/// The audiences ARM accepts, as it lists them in `InvalidAuthenticationTokenAudience`.
const ARM_AUDIENCES: [&str; 4] = [
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
];

/// `None` when the request may go on (tokens not required, or a good one); else ARM's 401.
pub(super) fn check(sim: &ArmSim, headers: &HeaderMap) -> Option<Response> {
    // Tokens not required: everyone is in.
    let verifier = lock(&sim.token_check).clone()?;
    let refuse = |code: &str, message: &str, challenge: &str| {
        Some(unauthorized(&verifier, code, message, challenge))
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return refuse(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        );
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return refuse(
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of an invalid 'Authorization' header.",
        );
    };
    let now = Utc::now();
    match verifier.verify(token, now) {
        Ok(claims) if ARM_AUDIENCES.contains(&claims.audience.as_str()) => None,
        Ok(claims) => refuse(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences {}.",
                claims.audience,
                ARM_AUDIENCES.map(|a| format!("'{a}'")).join(",")
            ),
            "The access token has been obtained for wrong audience or resource.",
        ),
        Err(TokenRejection::Expired { expired_at }) => refuse(
            "ExpiredAuthenticationToken",
            &format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                arm_time(expired_at),
                arm_time(now)
            ),
            "The access token has expired.",
        ),
        Err(rejection) => {
            tracing::debug!(%rejection, "ARM simulator refused a bearer token");
            refuse(
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                "The access token is invalid.",
            )
        }
    }
}

/// ARM writes times in its messages the .NET way: `5/14/2023 7:02:17 PM`.
fn arm_time(t: DateTime<Utc>) -> String {
    t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string()
}

fn unauthorized(verifier: &TokenVerifier, code: &str, message: &str, challenge: &str) -> Response {
    let mut resp = arm_error(StatusCode::UNAUTHORIZED, code, message);
    let value = format!(
        "Bearer authorization_uri=\"{}\", error=\"invalid_token\", error_description=\"{challenge}\"",
        verifier.authority()
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_times_read_like_arms_messages() {
        let t = DateTime::parse_from_rfc3339("2023-05-14T19:02:07Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(t.map(arm_time).as_deref(), Some("5/14/2023 7:02:07 PM"));
    }
}
