//! saga (in progress).
