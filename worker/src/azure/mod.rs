//! Azure Resource Manager provider (placeholder until the ARM client lands).
