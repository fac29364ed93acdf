//! The Azure Resource Manager simulator (placeholder until the ARM simulator lands).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::SimOptions;

#[derive(Debug)]
pub struct ArmSim;

impl ArmSim {
    pub fn new(_options: &SimOptions) -> Self {
        ArmSim
    }
}

pub fn router(_sim: Arc<ArmSim>, _addr: SocketAddr) -> axum::Router {
    axum::Router::new()
}
