//! Gated tests: [`require`] is the one way a test asks for environment variables (a live
//! endpoint, credentials) and skips, saying exactly which are missing, when they are not set.

use std::collections::HashMap;

/// The values of `vars` when every one of them is set (and not empty); otherwise `None`, after
/// printing a skip message that names exactly the missing variables and `purpose` (what the
/// test needs them for). Use it as
///
/// ```ignore
/// let Some(env) = onboarding_testkit::env::require(&["ONBOARD_X"], "a live X") else { return };
/// ```
pub fn require(vars: &[&str], purpose: &str) -> Option<HashMap<String, String>> {
    require_from(vars, purpose, |k| std::env::var(k).ok())
}

/// [`require`] reading the variables through `lookup` (for tests of this helper, and callers
/// that hold the environment as a map).
pub fn require_from(
    vars: &[&str],
    purpose: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<HashMap<String, String>> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for var in vars {
        match lookup(var).filter(|v| !v.is_empty()) {
            Some(v) => {
                found.insert((*var).to_string(), v);
            }
            None => missing.push(*var),
        }
    }
    if missing.is_empty() {
        Some(found)
    } else {
        eprintln!(
            "skipped: {purpose} needs {} set (missing: {})",
            vars.join(", "),
            missing.join(", ")
        );
        None
    }
}

/// An optional variable beside the required ones: its value when set and not empty.
pub fn optional(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_present_yields_every_value() {
        let got = require_from(&["A", "B"], "a test", |k| Some(format!("v{k}")));
        let got = got.expect("all set");
        assert_eq!(got["A"], "vA");
        assert_eq!(got["B"], "vB");
    }

    #[test]
    fn one_missing_or_empty_yields_none() {
        assert!(require_from(&["A", "B"], "a test", |k| (k == "A").then(String::new)).is_none());
        assert!(require_from(&["A", "B"], "a test", |k| (k == "A").then(|| "x".into())).is_none());
    }
}
