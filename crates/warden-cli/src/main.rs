//! The `warden` command-line tool.
//!
//! Exit codes: 0 success (also when a reader closes the output early, as `head` does), 1 a
//! test or verification failed or the output could not be written, 2 bad input (invalid
//! policy, invalid request, unreadable file, bad usage).

#![forbid(unsafe_code)]

mod analyze;
mod approvals;
mod audit;
mod bench;
mod certs;
mod check;
mod config;
mod eval;
mod keys;
mod mcp;
mod policy;
mod replay;
mod serve;
mod tenants;
mod test;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Policy decisions for AI agents and LLM traffic.
#[derive(Parser)]
#[command(name = "warden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files: exit 0 when all are valid, else print `file:line:col: message` and exit 2.
    Check {
        /// Policy files (YAML or JSON).
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Decide requests: one JSON request, or JSON Lines (sessions kept across lines); prints one
    /// decision JSON per request. With a `.rego` policy and `--query`, evaluates the query for each
    /// input document and prints `{"result": VALUE}` (`{}` when undefined), as OPA's Data API does.
    Eval {
        #[command(flatten)]
        policy: eval::PolicyArgs,
        /// The request file, or `-` (the default) for standard input.
        #[arg(default_value = "-")]
        requests: PathBuf,
    },
    /// Measure how fast a policy decides requests on this machine: the requests (JSON Lines or
    /// JSON, as for `eval`) are parsed once, then decided in turn, over and over, for `--seconds`;
    /// prints decisions per second, the time per decision and the outcomes.
    Bench {
        #[command(flatten)]
        policy: eval::PolicyArgs,
        /// How long to decide, in seconds (at most 3600).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Threads deciding at once (1 to 256); they share the sessions.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The request file, or `-` (the default) for standard input.
        #[arg(default_value = "-")]
        requests: PathBuf,
    },
    /// Run conformance scenarios (every `*.yaml` under the paths).
    Test {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also print one line per passing file.
        #[arg(long, short)]
        verbose: bool,
        /// Also report policy coverage: per rule how often it was reached, matched and decided,
        /// rules never matched, `if` sub-expressions never true or never false, argument
        /// conditions never held.
        #[arg(long)]
        coverage: bool,
        /// Coverage report format (with `--coverage` or `--fail-under`; `json` prints one JSON document on
        /// stdout, the test lines on stderr).
        #[arg(long, value_enum, default_value = "text")]
        format: test::Format,
        /// Exit 1 when coverage is below PERCENT (0 to 100); implies `--coverage`.
        #[arg(long, value_name = "PERCENT", value_parser = test::percentage)]
        fail_under: Option<f64>,
    },
    /// Re-decide captured traffic (`capture:` in `warden serve`) with POLICY, in order, sessions
    /// included, and report what flips; exit 1 when anything flips (unless `--allow-flips`).
    Replay {
        /// Capture files, or directories of them (read oldest first).
        #[arg(long = "capture", required = true)]
        captures: Vec<PathBuf>,
        /// The policy to decide with (YAML or JSON).
        #[arg(long, short)]
        policy: PathBuf,
        /// Exit 0 even when decisions flip.
        #[arg(long)]
        allow_flips: bool,
        /// Flipped decisions shown as examples at most.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: test::Format,
    },
    /// Analyse a policy: shadowed, redundant, conflicting and never-matching rules, taints
    /// added and never read (or read and never added), tools a principal can never call; each
    /// finding as `file:line:col: severity[code]: message`. Exit 1 on an error-level finding.
    /// With `--forbid`, prove instead that no session can make a forbidden sequence of allowed
    /// calls, or print a shortest counterexample (exit 1).
    Analyze {
        /// The policy file (YAML or JSON).
        policy: PathBuf,
        /// A forbidden sequence: `STEP -> STEP [-> ...] [within N]`, a STEP being
        /// `class:NAME`, `tool:GLOB` or a tool glob (repeatable).
        #[arg(long, value_name = "SEQUENCE")]
        forbid: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: test::Format,
        /// Most session states a proof explores before giving up (exit 2).
        #[arg(long, default_value_t = warden::analysis::DEFAULT_MAX_STATES)]
        max_states: usize,
    },
    /// Print the JSON Schema of policy files (format v1); the repository keeps it in
    /// `schema/policy.schema.json` (`warden schema > schema/policy.schema.json`).
    Schema,
    /// Run the HTTP decision daemon (see docs/serve.md).
    Serve(serve::ServeArgs),
    /// Certificates for development: a local CA, a server and a client certificate.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// The daemon's configuration: check it, or show it as `warden serve` would run with it.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Approvals of calls held by `ask` rules, on a running daemon (admin key): list, show,
    /// approve, deny.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Manage API keys (stored as SHA-256 hashes only).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Verify signed decision tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// MCP proxy: enforce the policy on an MCP server's tool calls (stdio or Streamable HTTP).
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// Policies in PostgreSQL (`database_url`): push, list, history, activate.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Tenants in PostgreSQL (`database_url`): owner and MCP upstream.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Create or update the PostgreSQL schema (`database_url`): applies the migrations built
    /// into this binary that the database lacks, once, whichever instance runs it.
    Migrate {
        /// The database (`postgres://...`; also `WARDEN_DATABASE_URL`, or `--config`'s).
        #[arg(long)]
        database_url: Option<String>,
        /// A `warden serve` configuration file naming the database.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Exit code for bad input.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check { policies } => check::run(&policies),
        Command::Eval { policy, requests } => eval::run(&policy, &requests),
        Command::Bench {
            policy,
            seconds,
            threads,
            json,
            requests,
        } => bench::run(&bench::BenchArgs {
            policy: &policy,
            requests: &requests,
            seconds,
            threads,
            json,
        }),
        Command::Test {
            paths,
            verbose,
            coverage,
            format,
            fail_under,
        } => test::run(&test::TestArgs {
            paths: &paths,
            verbose,
            coverage: coverage || fail_under.is_some(),
            format,
            fail_under,
        }),
        Command::Analyze {
            policy,
            forbid,
            format,
            max_states,
        } => analyze::run(&analyze::AnalyzeArgs {
            policy: &policy,
            forbid: &forbid,
            format,
            max_states,
        }),
        Command::Replay {
            captures,
            policy,
            allow_flips,
            examples,
            format,
        } => replay::run(&replay::ReplayArgs {
            captures: &captures,
            policy: &policy,
            allow_flips,
            examples,
            format,
        }),
        Command::Schema => print_schema(),
        Command::Serve(args) => serve::run(&args),
        Command::Config(command) => config::run(&command),
        Command::Certs(command) => certs::run(&command),
        Command::Keys(command) => keys::run(&command),
        Command::Approvals(command) => approvals::run(&command),
        Command::Audit(command) => audit::run(&command),
        Command::Token(command) => token::run(&command),
        Command::Mcp(command) => mcp::run(command),
        Command::Policy(command) => policy::run(&command),
        Command::Tenants(command) => tenants::run(&command),
        Command::Migrate {
            database_url,
            config,
        } => keys::migrate(database_url, config.as_deref()),
    }
}

/// `warden schema`: the policy JSON Schema, pretty-printed, with a final newline.
fn print_schema() -> ExitCode {
    use std::io::Write;
    let schema = warden::policy_schema();
    let text = match serde_json::to_string_pretty(&schema) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot write the schema: {e}");
            return ExitCode::FAILURE;
        }
    };
    match writeln!(std::io::stdout(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the schema: {e}");
            ExitCode::FAILURE
        }
    }
}
