//! SQLite journal (placeholder).
