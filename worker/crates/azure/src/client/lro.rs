//! Long-running operations: the operation an answer announces (`Azure-AsyncOperation`, then
//! `Location`, else the resource's own provisioning state), and polling it, never off the
//! client's own origin (a token never leaves for a host the configuration did not name).
//!
//! May touch: operation URLs on the client's own ARM endpoint.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use url::Url;

use super::classify::{classify, operation_failed};
use super::{ArmClient, ArmResponse, Op};
use crate::models::AsyncOperationStatus;
use onboarding_providers::{OperationKind, PendingOperation, Progress, ProviderError};

impl ArmClient {
    /// The operation to poll that an answer announces: `Azure-AsyncOperation` first, then
    /// `Location`. `None` when it names neither.
    pub fn pending_from(&self, resp: &ArmResponse) -> Option<PendingOperation> {
        let retry = resp
            .retry_after()
            .unwrap_or(self.options.default_poll_interval)
            .as_secs();
        if let Some(url) = resp.header("azure-asyncoperation") {
            return Some(PendingOperation {
                url: url.to_string(),
                kind: OperationKind::AsyncOperation,
                retry_after_secs: retry,
                since: None,
                place: None,
            });
        }
        resp.header("location").map(|url| PendingOperation {
            url: url.to_string(),
            kind: OperationKind::Location,
            retry_after_secs: retry,
            since: None,
            place: None,
        })
    }

    /// Poll the resource itself (its `provisioningState`).
    pub fn resource_pending(
        &self,
        resource_url: &Url,
        retry_after: Option<Duration>,
    ) -> PendingOperation {
        PendingOperation {
            url: resource_url.to_string(),
            kind: OperationKind::ProvisioningState,
            retry_after_secs: retry_after
                .unwrap_or(self.options.default_poll_interval)
                .as_secs(),
            since: None,
            place: None,
        }
    }

    /// Look at a long-running operation once.
    ///
    /// `Done` means the operation is over and did not fail; the caller then calls its forward
    /// action again (create-or-update is idempotent) to read the final state. An operation
    /// record that vanished (404) is also `Done` for that reason: the forward action will find
    /// out where things stand.
    pub async fn poll(
        &self,
        pending: &PendingOperation,
        op: Op<'_>,
    ) -> Result<Progress<()>, ProviderError> {
        if matches!(
            pending.kind,
            OperationKind::ClusterTurn | OperationKind::Wait
        ) {
            // A saga's own wait: nothing at ARM to look at.
            return Ok(Progress::Done(()));
        }
        let url = Url::parse(&pending.url).map_err(|e| {
            ProviderError::permanent(
                op.operation,
                op.resource,
                format!("the operation URL {:?} is not a URL: {e}", pending.url),
            )
        })?;
        let resp = self.send(Method::GET, url, None, op).await?;
        let again = |resp: &ArmResponse| {
            Progress::Pending(PendingOperation {
                url: pending.url.clone(),
                kind: pending.kind,
                retry_after_secs: resp
                    .retry_after()
                    .map(|d| d.as_secs())
                    .unwrap_or(pending.retry_after_secs),
                since: None,
                place: None,
            })
        };
        if resp.status == 404 {
            return Ok(Progress::Done(()));
        }
        if !resp.is_success() {
            return Err(classify(&resp, op));
        }
        match pending.kind {
            OperationKind::Location => Ok(if resp.status == 202 {
                again(&resp)
            } else {
                Progress::Done(())
            }),
            OperationKind::AsyncOperation => {
                let status: AsyncOperationStatus = resp
                    .body
                    .clone()
                    .and_then(|b| serde_json::from_value(b).ok())
                    .ok_or_else(|| {
                        ProviderError::transient(
                            op.operation,
                            op.resource,
                            format!(
                                "the operation status at {} is not a status document (request id {})",
                                pending.url, resp.request_id
                            ),
                        )
                    })?;
                match status.status.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(Progress::Done(())),
                    "failed" | "canceled" | "cancelled" => {
                        Err(operation_failed(&status.status, status.error, op))
                    }
                    _ => Ok(again(&resp)),
                }
            }
            OperationKind::ProvisioningState => {
                let state = resp
                    .body
                    .as_ref()
                    .and_then(|b| b.pointer("/properties/provisioningState"))
                    .and_then(Value::as_str)
                    .unwrap_or("Succeeded");
                match state.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(Progress::Done(())),
                    "failed" | "canceled" | "cancelled" => Err(operation_failed(state, None, op)),
                    _ => Ok(again(&resp)),
                }
            }
            OperationKind::ClusterTurn | OperationKind::Wait => Ok(Progress::Done(())),
        }
    }

    pub(super) fn check_origin(&self, url: &Url, op: Op<'_>) -> Result<(), ProviderError> {
        if url.origin() == self.endpoint.origin() {
            Ok(())
        } else {
            Err(ProviderError::permanent(
                op.operation,
                op.resource,
                format!(
                    "refusing to send a request to {} : it is not on the configured ARM endpoint {}",
                    url.origin().ascii_serialization(),
                    self.endpoint
                ),
            )
            .with_code("ForeignOperationUrl"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ArmClientOptions;
    use super::*;
    use onboarding_core::ErrorClass;

    const OP: Op<'static> = Op {
        operation: "create node pool",
        resource: "/x",
    };

    #[tokio::test]
    async fn operation_urls_on_another_host_are_refused() {
        let c = ArmClient::new(
            Url::parse("http://127.0.0.1:1").unwrap(),
            None,
            ArmClientOptions::default(),
        )
        .unwrap();
        let pending = PendingOperation {
            url: "https://evil.example/op".into(),
            kind: OperationKind::AsyncOperation,
            retry_after_secs: 1,
            since: None,
            place: None,
        };
        let e = c.poll(&pending, OP).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.code.as_deref(), Some("ForeignOperationUrl"));
    }
}
