//! `producer`: the operator CLI. Sends onboarding and offboarding requests (and raw bytes, to
//! test how the worker treats bad input), follows them to their outcome, lists the tenants and
//! shows a tenant's saga from the journal, and works the dead-letter queue.

mod dlq;
mod events;
mod follow;
mod list;
mod output;
mod plan;
mod send;
mod status;
mod stores;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use onboarding_config::Config;

/// Send tenant onboarding requests and operate the onboarding worker's queue.
///
/// Exit codes: 0 success; 1 the request failed (with --wait) or an operation failed;
/// 2 invalid input or configuration; 3 timed out waiting; 4 not found.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (the same as the worker's).
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask for a tenant to be onboarded (or updated to this spec). Prints the request id.
    Send(send::SendArgs),
    /// Ask for a tenant to be offboarded. Its blob container is kept unless --purge-data.
    Offboard(send::OffboardArgs),
    /// List the tenants the journal knows: state, target, latest request and when.
    List(list::ListArgs),
    /// Print the outcome events the journal holds (oldest first); --follow for new ones.
    Events(events::EventsArgs),
    /// Show a tenant's saga from the journal: each step, its state and outputs.
    Status {
        /// The tenant id.
        tenant: String,
    },
    /// Inspect, replay and purge the dead-letter queue.
    Dlq(DlqArgs),
    /// Verify tenants' live state against their spec and prove their isolation; exit 0 clean,
    /// 1 drift or violation, 4 unknown tenant. --repair re-sends the spec of unclean ones.
    Verify(verify::VerifyArgs),
    // Its help (verbs, exit codes) is `PlanArgs`'s doc.
    Plan(plan::PlanArgs),
}

#[derive(Debug, Args)]
struct DlqArgs {
    #[command(subcommand)]
    action: dlq::DlqAction,
}

/// An error with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The command's own output already says why (a verify report): nothing more is printed.
    pub reported: bool,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reported: false,
        }
    }

    /// A failure the command's output has already described.
    pub fn reported(code: u8) -> Self {
        Self {
            code,
            message: String::new(),
            reported: true,
        }
    }
}

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_TIMEOUT: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = output::Output { json: cli.json };
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            if out.json {
                out.emit(
                    &serde_json::json!({"error": {"exitCode": EXIT_INVALID, "message": format!("cannot load the configuration: {e}")}}),
                    String::new,
                );
            } else {
                eprintln!("producer: {e}");
            }
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("producer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Send(args) => send::send(&config, &out, args).await,
            Command::Offboard(args) => send::offboard(&config, &out, args).await,
            Command::List(args) => list::list(&config, &out, args).await,
            Command::Events(args) => events::events(&config, &out, args).await,
            Command::Status { tenant } => status::status(&config, &out, &tenant).await,
            Command::Dlq(args) => dlq::run(&config, &out, args.action).await,
            Command::Verify(args) => verify::verify(&config, &out, args).await,
            Command::Plan(args) => plan::plan(&config, &out, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.reported => ExitCode::from(f.code),
        Err(f) => {
            if out.json {
                // Scripts reading --json get the failure as a document too.
                out.emit(
                    &serde_json::json!({"error": {"exitCode": f.code, "message": f.message}}),
                    String::new,
                );
            } else if !f.message.is_empty() {
                eprintln!("producer: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
