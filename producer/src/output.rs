//! Human text by default, one JSON document per result with `--json`. Written to stdout without
//! panicking when the reader has gone (`producer status X | head`): the producer then stops
//! quietly, as command-line tools do.

use std::io::Write;

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Print `value` as JSON, or `text` for people.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let line = if self.json {
            match serde_json::to_string(value) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("producer: cannot encode output: {e}");
                    return;
                }
            }
        } else {
            text()
        };
        write_line(&line);
    }
}

/// One line to stdout. A closed pipe ends the process with success (the reader took what it
/// wanted); any other write failure is reported once and ends it with failure.
fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("producer: cannot write to stdout: {e}");
        std::process::exit(i32::from(crate::EXIT_FAILED));
    }
}
