//! Figures with their goals, printed as one block per benchmark and written as a markdown table.

use std::fmt::Write as _;

/// What a figure should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn describe(self, unit: &str, decimals: usize) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {}", with_unit(g, unit, decimals)),
            Goal::AtLeast(g) => format!("≥ {}", with_unit(g, unit, decimals)),
        }
    }
}

/// One measured number.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub decimals: usize,
    pub goal: Option<Goal>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str, decimals: usize) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            decimals,
            goal: None,
        }
    }

    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    pub fn shown(&self) -> String {
        with_unit(self.value, &self.unit, self.decimals)
    }

    /// `PASS`, or `MISS` and by how much; `None` without a goal.
    pub fn verdict(&self) -> Option<String> {
        let goal = self.goal?;
        let (ok, by) = match goal {
            Goal::AtMost(g) => (self.value <= g, self.value - g),
            Goal::AtLeast(g) => (self.value >= g, g - self.value),
        };
        if !self.value.is_finite() {
            return Some("MISS (no value)".into());
        }
        if ok {
            return Some("PASS".into());
        }
        let g = match goal {
            Goal::AtMost(g) | Goal::AtLeast(g) => g,
        };
        let pct = if g != 0.0 {
            format!(", {:.0} %", by / g.abs() * 100.0)
        } else {
            String::new()
        };
        Some(format!(
            "MISS by {}{pct}",
            with_unit(by, &self.unit, self.decimals)
        ))
    }
}

fn with_unit(v: f64, unit: &str, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if unit.is_empty() {
        format!("{v:.decimals$}")
    } else {
        format!("{v:.decimals$} {unit}")
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct Block {
    /// Command-line name, e.g. `critical-path`.
    pub name: String,
    pub title: String,
    /// How it was run: sizes, settings.
    pub setup: String,
    pub figures: Vec<Figure>,
    /// What the figures mean, why a goal is missed.
    pub notes: Vec<String>,
    /// Set when the benchmark could not finish.
    pub error: Option<String>,
}

impl Block {
    pub fn new(name: &str, title: &str, setup: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            setup: setup.into(),
            figures: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    pub fn push(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn failed(name: &str, title: &str, error: String) -> Self {
        let mut b = Self::new(name, title, "");
        b.error = Some(error);
        b
    }

    pub fn print(&self) {
        println!("\n== {} ({})", self.title, self.name);
        if !self.setup.is_empty() {
            println!("   {}", self.setup);
        }
        if let Some(e) = &self.error {
            println!("   ERROR: {e}");
        }
        let width = self
            .figures
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(0);
        for f in &self.figures {
            let goal = f
                .goal
                .map(|g| format!("goal {}", g.describe(&f.unit, f.decimals)))
                .unwrap_or_default();
            let verdict = f.verdict().unwrap_or_default();
            println!(
                "   {:width$}  {:>14}  {:<16} {}",
                f.name,
                f.shown(),
                goal,
                verdict
            );
        }
        for n in &self.notes {
            println!("   - {n}");
        }
    }
}

/// Everything needed to write `docs/benchmarks.md`.
#[derive(Debug)]
pub struct Run<'a> {
    pub command: String,
    pub machine: String,
    pub blocks: &'a [Block],
}

pub fn markdown(run: &Run<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Written by `{}` (see `scripts/bench.sh`). Figures are ratios or rates measured in one run on \
         the machine below; they are not test thresholds. Rerun to refresh this file.",
        run.command
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Machine: {}", run.machine);
    let _ = writeln!(s);
    let _ = writeln!(s, "| benchmark | figure | value | goal | verdict |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for b in run.blocks {
        if let Some(e) = &b.error {
            let _ = writeln!(s, "| {} | – | error: {} | | |", b.title, cell(e));
        }
        for f in &b.figures {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                b.title,
                cell(&f.name),
                cell(&f.shown()),
                f.goal
                    .map(|g| cell(&g.describe(&f.unit, f.decimals)))
                    .unwrap_or_default(),
                f.verdict().unwrap_or_default()
            );
        }
    }
    for b in run.blocks {
        let _ = writeln!(s);
        let _ = writeln!(s, "## {} (`bench {}`)", b.title, b.name);
        let _ = writeln!(s);
        if !b.setup.is_empty() {
            let _ = writeln!(s, "{}", b.setup);
            let _ = writeln!(s);
        }
        if let Some(e) = &b.error {
            let _ = writeln!(s, "**Error:** {e}");
            let _ = writeln!(s);
        }
        for n in &b.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_above_its_ceiling_misses_by_the_difference() {
        let f = Figure::new("ratio", 1.25, "", 2).goal(Goal::AtMost(1.10));
        assert_eq!(f.verdict().as_deref(), Some("MISS by 0.15, 14 %"));
        let f = Figure::new("ratio", 1.05, "", 2).goal(Goal::AtMost(1.10));
        assert_eq!(f.verdict().as_deref(), Some("PASS"));
    }

    #[test]
    fn a_rate_below_its_floor_misses() {
        let f = Figure::new("share", 0.8, "", 2).goal(Goal::AtLeast(0.9));
        assert!(f.verdict().is_some_and(|v| v.starts_with("MISS by 0.10")));
    }
}
