//! The Kubernetes API simulator (placeholder until the Kubernetes simulator lands).

use std::sync::Arc;

use crate::SimOptions;

#[derive(Debug)]
pub struct KubeSim;

impl KubeSim {
    pub fn new(_options: &SimOptions) -> Self {
        KubeSim
    }
}

pub fn router(_sim: Arc<KubeSim>) -> axum::Router {
    axum::Router::new()
}
