//! Kubernetes provider (placeholder until the Kubernetes provider lands).

pub mod manifests;
