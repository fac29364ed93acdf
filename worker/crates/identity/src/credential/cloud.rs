//! The HTTP side of a credential's cloud: the authority `azure_identity` is pointed at, the
//! certificate authorities trusted for it, and a pipeline without retries of its own.
//!
//! May touch: the CA file the cloud names (read once, when the credential is built).

use std::sync::Arc;
use std::time::Duration;

use azure_core_v1::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core_v1::http::{ClientOptions, RetryOptions, Transport};

use onboarding_core::Cloud;

/// Client options for `azure_identity` on `cloud`.
///
/// The pipeline does not retry: a token fetch is retried by the caller's backoff (the worker
/// waits, reports not ready and tries again), and the SDK's own retries would hold every caller
/// of the scope for minutes while Entra is down.
pub(super) fn client_options(cloud: &Cloud, timeout: Duration) -> Result<ClientOptions, String> {
    let mut http = reqwest::Client::builder().timeout(timeout);
    if let Some(file) = &cloud.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| format!("cannot read the CA file {}: {e}", file.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "the CA file {} holds no PEM certificate: {e}",
                file.display()
            )
        })?;
        http = http.tls_certs_merge(certs);
    }
    let http = http
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let authority_host = cloud.authority_host();
    if !authority_host.starts_with("https://") {
        return Err(format!(
            "the authority {authority_host} is not an https URL (Entra is only reached over TLS)"
        ));
    }
    let mut custom = CustomConfiguration::default();
    custom.authority_host = authority_host.to_string();
    Ok(ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        ..ClientOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_core::CloudName;

    #[test]
    fn a_sovereign_cloud_is_reached_at_its_own_authority() {
        let gov = Cloud {
            name: CloudName::UsGovernment,
            ..Cloud::default()
        };
        assert_eq!(gov.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(
            gov.service_bus_scope(),
            "https://servicebus.usgovcloudapi.net/.default"
        );
        assert!(client_options(&gov, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn an_authority_without_tls_is_refused_naming_it() {
        let cloud = Cloud {
            authority_host: Some("http://127.0.0.1:1".into()),
            ..Cloud::default()
        };
        let err = client_options(&cloud, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("http://127.0.0.1:1"), "{err}");
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let cloud = Cloud {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Cloud::default()
        };
        let err = client_options(&cloud, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
