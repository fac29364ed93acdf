//! Journal conformance suite (placeholder).
