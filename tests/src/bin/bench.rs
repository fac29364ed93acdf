//! `bench`: the performance benchmarks (issue 7). Prints one block of figures per benchmark,
//! each with its goal and PASS/MISS, and writes the table to `docs/benchmarks.md`.
//!
//! ```text
//! cargo build --release -p worker && cargo run -p e2e --release --bin bench -- all
//! bench [all|critical-path|throughput|arm-budget|memory|cold-start]... [--quick] [--no-docs]
//! ```

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use bench::harness::Runtimes;
use bench::report::{self, Block};
use bench::{arm_budget, cluster_burst, cold_start, critical_path, memory, procstat, throughput};

type Bench = fn(&Runtimes, bool) -> anyhow::Result<Block>;

const BENCHES: &[(&str, &str, Bench)] = &[
    (critical_path::NAME, "Critical path", critical_path::run),
    (throughput::NAME, "Throughput and cost", throughput::run),
    (arm_budget::NAME, "ARM write budget", arm_budget::run),
    (
        cluster_burst::NAME,
        "One cluster, a burst of onboardings",
        cluster_burst::run,
    ),
    (memory::NAME, "Memory at scale", memory::run),
    (cold_start::NAME, "Cold start", cold_start::run),
];

const USAGE: &str = "usage: bench [all|critical-path|throughput|arm-budget|cluster-burst|memory|cold-start]... [--quick] [--no-docs]
  --quick    smaller runs (fewer tenants and repetitions)
  --no-docs  do not write docs/benchmarks.md (written by default when running all)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, flag, file] = args.as_slice()
        && cmd == memory::WORKER_PROCESS
        && flag == "--config"
    {
        return match memory::worker_process(std::path::Path::new(file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {cmd}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut names = Vec::new();
    let mut quick = false;
    let mut docs = None;
    for arg in &args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--no-docs" => docs = Some(false),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "all" => names.extend(BENCHES.iter().map(|b| b.0.to_string())),
            other if BENCHES.iter().any(|b| b.0 == other) => names.push(other.to_string()),
            other => {
                eprintln!("bench: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if names.is_empty() {
        names.extend(BENCHES.iter().map(|b| b.0.to_string()));
    }
    let all = names.len() == BENCHES.len();
    let write_docs = docs.unwrap_or(all);

    let rts = match Runtimes::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let machine = format!(
        "{cores} cores, load average at start {} ({} build, {}{})",
        procstat::loadavg(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::env::consts::OS,
        if quick { ", --quick sizes" } else { "" }
    );
    println!("bench: {machine}");
    if cfg!(debug_assertions) {
        println!("bench: WARNING: a debug build; run with --release for meaningful figures");
    }
    let mut blocks = Vec::new();
    let mut failed = false;
    for (name, title, run) in BENCHES {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        println!(
            "\nbench: running {name} (load average {})",
            procstat::loadavg()
        );
        let block = match run(&rts, quick) {
            Ok(b) => b,
            Err(e) => {
                failed = true;
                Block::failed(name, title, format!("{e:#}"))
            }
        };
        block.print();
        blocks.push(block);
    }
    if write_docs {
        let command = format!(
            "cargo run -p e2e --release --bin bench -- all{}",
            if quick { " --quick" } else { "" }
        );
        let text = report::markdown(&report::Run {
            command,
            machine,
            blocks: &blocks,
        });
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        match std::fs::write(&path, text) {
            Ok(()) => println!("\nbench: wrote {}", path.display()),
            Err(e) => {
                eprintln!("bench: cannot write {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
