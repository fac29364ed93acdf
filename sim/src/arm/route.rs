//! The routing table: which ARM paths the simulator implements, parsed case-insensitively into a
//! [`Route`], with each route's fault-injection family, api-version and subscription.

use axum::http::Uri;

use super::schema::BodyKind;
use super::{AKS_API_VERSION, AUTHORIZATION_API_VERSION, MSI_API_VERSION, STORAGE_API_VERSION};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Route {
    AgentPool {
        sub: String,
        rg: String,
        cluster: String,
        pool: String,
    },
    Identity {
        sub: String,
        rg: String,
        name: String,
    },
    Fic {
        sub: String,
        rg: String,
        identity: String,
        name: String,
    },
    Container {
        sub: String,
        rg: String,
        account: String,
        name: String,
    },
    RoleAssignment {
        scope: String,
        name: String,
    },
    RoleAssignments {
        scope: String,
    },
    Operation {
        id: String,
        result: bool,
    },
}

pub(super) fn is(segment: &str, literal: &str) -> bool {
    segment.eq_ignore_ascii_case(literal)
}

fn matches(segs: &[&str], pattern: &[&str]) -> bool {
    segs.len() == pattern.len() && segs.iter().zip(pattern).all(|(s, p)| *p == "*" || is(s, p))
}

pub(super) fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let s = |i: usize| segs[i].to_string();
    // Role assignments may hang off any scope, so look for them first.
    if let Some(i) = (0..segs.len().saturating_sub(2)).rev().find(|&i| {
        is(segs[i], "providers")
            && is(segs[i + 1], "Microsoft.Authorization")
            && is(segs[i + 2], "roleAssignments")
    }) {
        let scope = format!("/{}", segs[..i].join("/"));
        if i == 0 {
            return None;
        }
        return match segs.len() - (i + 3) {
            0 => Some(Route::RoleAssignments { scope }),
            1 => Some(Route::RoleAssignment {
                scope,
                name: s(i + 3),
            }),
            _ => None,
        };
    }
    let rg = ["subscriptions", "*", "resourceGroups", "*", "providers"];
    let with =
        |tail: &[&'static str]| -> Vec<&'static str> { rg.iter().chain(tail).copied().collect() };
    if matches(
        &segs,
        &with(&[
            "Microsoft.ContainerService",
            "managedClusters",
            "*",
            "agentPools",
            "*",
        ]),
    ) {
        return Some(Route::AgentPool {
            sub: s(1),
            rg: s(3),
            cluster: s(7),
            pool: s(9),
        });
    }
    if matches(
        &segs,
        &with(&["Microsoft.ManagedIdentity", "userAssignedIdentities", "*"]),
    ) {
        return Some(Route::Identity {
            sub: s(1),
            rg: s(3),
            name: s(7),
        });
    }
    if matches(
        &segs,
        &with(&[
            "Microsoft.ManagedIdentity",
            "userAssignedIdentities",
            "*",
            "federatedIdentityCredentials",
            "*",
        ]),
    ) {
        return Some(Route::Fic {
            sub: s(1),
            rg: s(3),
            identity: s(7),
            name: s(9),
        });
    }
    if matches(
        &segs,
        &with(&[
            "Microsoft.Storage",
            "storageAccounts",
            "*",
            "blobServices",
            "default",
            "containers",
            "*",
        ]),
    ) {
        return Some(Route::Container {
            sub: s(1),
            rg: s(3),
            account: s(7),
            name: s(11),
        });
    }
    if matches(
        &segs,
        &[
            "subscriptions",
            "*",
            "providers",
            "Microsoft.ContainerService",
            "locations",
            "*",
            "operations",
            "*",
        ],
    ) {
        return Some(Route::Operation {
            id: s(7),
            result: false,
        });
    }
    if matches(
        &segs,
        &[
            "subscriptions",
            "*",
            "providers",
            "Microsoft.ContainerService",
            "locations",
            "*",
            "operationresults",
            "*",
        ],
    ) {
        return Some(Route::Operation {
            id: s(7),
            result: true,
        });
    }
    None
}

/// A managed cluster's id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/
/// Microsoft.ContainerService/managedClusters/{name}`, as (sub, rg, name). Clusters are not a
/// route: they exist implicitly; this serves `POST /_sim/cluster-operation`.
pub(super) fn parse_cluster_id(id: &str) -> Option<(String, String, String)> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let pattern = [
        "subscriptions",
        "*",
        "resourceGroups",
        "*",
        "providers",
        "Microsoft.ContainerService",
        "managedClusters",
        "*",
    ];
    (!segs.iter().any(|s| s.is_empty()) && matches(&segs, &pattern)).then(|| {
        (
            segs[1].to_string(),
            segs[3].to_string(),
            segs[7].to_string(),
        )
    })
}

impl Route {
    /// Fault-injection family, e.g. `arm.agent_pools`.
    pub(super) fn family(&self) -> &'static str {
        match self {
            Route::AgentPool { .. } => "arm.agent_pools",
            Route::Identity { .. } => "arm.identities",
            Route::Fic { .. } => "arm.federated_credentials",
            Route::Container { .. } => "arm.blob_containers",
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => "arm.role_assignments",
            Route::Operation { .. } => "arm.operations",
        }
    }

    pub(super) fn api_version(&self) -> &'static str {
        match self {
            Route::AgentPool { .. } | Route::Operation { .. } => AKS_API_VERSION,
            Route::Identity { .. } | Route::Fic { .. } => MSI_API_VERSION,
            Route::Container { .. } => STORAGE_API_VERSION,
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => {
                AUTHORIZATION_API_VERSION
            }
        }
    }

    pub(super) fn subscription(&self) -> String {
        match self {
            Route::AgentPool { sub, .. }
            | Route::Identity { sub, .. }
            | Route::Fic { sub, .. }
            | Route::Container { sub, .. } => sub.clone(),
            Route::RoleAssignment { scope, .. } | Route::RoleAssignments { scope } => scope
                .trim_start_matches('/')
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .to_string(),
            Route::Operation { .. } => String::new(),
        }
    }
}

pub(super) fn body_kind(route: &Route) -> Option<BodyKind> {
    match route {
        Route::AgentPool { .. } => Some(BodyKind::AgentPool),
        Route::Identity { .. } => Some(BodyKind::Identity),
        Route::Fic { .. } => Some(BodyKind::FederatedIdentityCredential),
        Route::Container { .. } => Some(BodyKind::BlobContainer),
        Route::RoleAssignment { .. } => Some(BodyKind::RoleAssignmentCreate),
        _ => None,
    }
}

pub(super) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| {
        url_decode_pairs(q)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    })
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_case_insensitively() {
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.containerservice/managedClusters/c/agentPools/p"
            ),
            Some(Route::AgentPool {
                sub: "s".into(),
                rg: "rg".into(),
                cluster: "c".into(),
                pool: "p".into()
            })
        );
        let scope = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c";
        assert_eq!(
            parse_route(&format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/n"
            )),
            Some(Route::RoleAssignment {
                scope: scope.into(),
                name: "n".into()
            })
        );
        assert_eq!(
            parse_route(&format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments"
            )),
            Some(Route::RoleAssignments {
                scope: scope.into()
            })
        );
        assert_eq!(parse_route("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(parse_route("/subscriptions//x"), None);
    }

    #[test]
    fn query_parameters_are_decoded() {
        let uri: Uri = "/x?api-version=2022-04-01&%24filter=assignedTo(%27abc%27)"
            .parse()
            .unwrap();
        assert_eq!(
            query_param(&uri, "$filter").as_deref(),
            Some("assignedTo('abc')")
        );
        assert_eq!(
            query_param(&uri, "api-version").as_deref(),
            Some("2022-04-01")
        );
    }
}
