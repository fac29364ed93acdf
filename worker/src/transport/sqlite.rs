//! Embedded SQLite transport (placeholder).
