//! contract (in progress).
