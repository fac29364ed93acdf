//! Tenant onboarding worker: consumes onboarding commands, provisions each tenant as a saga
//! advanced by messages, and publishes what happened as CloudEvents.
//!
//! Layout: [`contract`] (commands, events, validation, names), [`saga`] (engine, journal record,
//! one file per step), [`providers`] (the Azure and Kubernetes traits), [`azure`] and [`k8s`]
//! (their production implementations), [`transport`] and [`journal`] (pluggable parts with an
//! embedded SQLite default), [`runner`] (the message loop) and [`context`] (the one struct that
//! carries every client, so tests can swap them). Operations: [`metrics`], [`health`] (the
//! `/healthz`, `/readyz`, `/metrics` server) and [`telemetry`] (logs, traces, OTLP export).

pub mod auth;
pub mod azure;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod context;
pub mod contract;
pub mod error;
pub mod health;
pub mod journal;
pub mod k8s;
pub mod metrics;
pub mod providers;
pub mod runner;
pub mod saga;
pub mod telemetry;
pub mod transport;
