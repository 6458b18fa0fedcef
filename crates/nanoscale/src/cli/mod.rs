//! CLI verbs that talk to a control plane through `nanoscale-client`.
//!
//! Every verb maps its arguments to one or a few API calls and prints the answer
//! as a table (for people) or as the API's JSON (for scripts, `--output json`).
//! Exit codes: 0 ok, 1 the API or the network failed, 2 a usage problem (including
//! "not logged in"). Errors go to stderr as `error: …` with a `hint: …` when there
//! is a fix to suggest.
//!
//! Secrets never come from the command line (where `ps` shows them): the token comes
//! from `NANOSCALE_TOKEN` or the config file, passwords from `NANOSCALE_PASSWORD`,
//! standard input or a prompt without echo.
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use nanoscale_client::{Client, ClientError};

mod auth;
mod cluster;
mod config_file;
mod env;
mod events;
mod input;
mod output;
mod projects;
mod releases;
mod services;
mod tokens;
mod users;

/// Options every client verb understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// How to print answers: aligned tables, or the API's JSON for scripts.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "NANOSCALE_OUTPUT",
        default_value_t = Output::Table,
        value_name = "FORMAT"
    )]
    pub output: Output,
    /// Control plane to talk to [default: the one you logged in to].
    #[arg(long, global = true, env = "NANOSCALE_URL", value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create the first admin of a new control plane, then log in as them.
    Setup(auth::SetupArgs),
    /// Log in to a control plane and save an API token for this CLI.
    Login(auth::LoginArgs),
    /// Revoke the saved token and forget it on this machine.
    Logout,
    /// Show who you are logged in as, and where.
    Whoami,
    /// Projects: named groups of services.
    #[command(subcommand)]
    Project(projects::ProjectCommand),
    /// Services: apps built from a git repository.
    #[command(subcommand)]
    Service(services::ServiceCommand),
    /// A service's environment variables (applied at the next deploy).
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Deploy a service: resolve its ref to a commit and queue a release.
    Deploy(releases::DeployArgs),
    /// List a service's releases, newest first.
    Releases(releases::ReleasesArgs),
    /// List a service's running instances (node, release, port, pid, status, restarts).
    Instances(releases::ReleasesArgs),
    /// Return a service to an earlier release.
    Rollback(releases::RollbackArgs),
    /// Show a service's instance logs (or a build's output with --build).
    Logs(releases::LogsArgs),
    /// Show the event timeline, and follow it live with -f.
    Events(events::EventsArgs),
    /// API tokens for scripts and CI.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// The machines that run services.
    #[command(subcommand)]
    Node(cluster::NodeCommand),
    /// User accounts (admins only).
    #[command(subcommand)]
    User(users::UserCommand),
    /// Every change made through the API, newest first (admins only).
    Audit(cluster::AuditArgs),
}

/// Runs one client verb; prints any error to stderr and maps it to the exit code.
pub async fn run(global: GlobalArgs, command: ClientCommand) -> ExitCode {
    match dispatch(global, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Messages often quote what the user typed (or the server echoed):
            // no control characters reach the terminal, and no wall of text.
            eprintln!("error: {}", output::terminal_message(&error.message));
            if let Some(hint) = &error.hint {
                eprintln!("hint: {}", output::terminal_message(hint));
            }
            ExitCode::from(error.exit_code())
        }
    }
}

async fn dispatch(global: GlobalArgs, command: ClientCommand) -> CliResult {
    match command {
        ClientCommand::Setup(args) => auth::setup(&global, args).await,
        ClientCommand::Login(args) => auth::login(&global, args).await,
        ClientCommand::Logout => auth::logout(&global).await,
        ClientCommand::Whoami => auth::whoami(&connect(&global)?).await,
        ClientCommand::Project(command) => projects::run(&connect(&global)?, command).await,
        ClientCommand::Service(command) => services::run(&connect(&global)?, command).await,
        ClientCommand::Env(command) => env::run(&connect(&global)?, command).await,
        ClientCommand::Deploy(args) => releases::deploy(&connect(&global)?, args).await,
        ClientCommand::Releases(args) => releases::list(&connect(&global)?, args).await,
        ClientCommand::Instances(args) => releases::instances(&connect(&global)?, args).await,
        ClientCommand::Rollback(args) => releases::rollback(&connect(&global)?, args).await,
        ClientCommand::Logs(args) => releases::logs(&connect(&global)?, args).await,
        ClientCommand::Events(args) => events::run(&connect(&global)?, args).await,
        ClientCommand::Token(command) => tokens::run(&connect(&global)?, command).await,
        ClientCommand::Node(cluster::NodeCommand::Run(args)) => crate::node_run::run(args).await,
        ClientCommand::Node(command) => cluster::node(&connect(&global)?, command).await,
        ClientCommand::User(command) => users::run(&connect(&global)?, command).await,
        ClientCommand::Audit(args) => cluster::audit(&connect(&global)?, args).await,
    }
}

/// What a verb needs: an authenticated client and the output format.
pub struct Context {
    pub client: Client,
    pub output: Output,
}

impl Context {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Builds the client from `--url`/`NANOSCALE_URL`, `NANOSCALE_TOKEN` and the
/// config file. The saved token is only sent to the URL it was saved for, so
/// `--url` pointing elsewhere never leaks it.
fn connect(global: &GlobalArgs) -> CliResult<Context> {
    let path = config_file::path()?;
    let saved = config_file::load(&path)?.unwrap_or_default();
    let url = global
        .url
        .clone()
        .filter(|url| !url.trim().is_empty())
        .or_else(|| saved.url.clone())
        .ok_or_else(|| {
            CliError::usage("no control plane to talk to")
                .hint("run `nanoscale login <url>`, or pass --url / set NANOSCALE_URL")
        })?;
    // Refuse a bad URL before anything else, so the error names the real problem.
    Client::new(&url, None)?;
    let from_env = std::env::var("NANOSCALE_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty());
    let token = match from_env {
        Some(token) => token.trim().to_owned(),
        None => {
            let same_place = saved
                .url
                .as_deref()
                .is_some_and(|saved_url| same_url(saved_url, &url));
            match saved.token {
                Some(token) if same_place => token,
                _ => {
                    return Err(CliError::usage(format!("not logged in to {url}"))
                        .hint(format!("run `nanoscale login {url}`")))
                }
            }
        }
    };
    let client = Client::new(&url, Some(token))?;
    Ok(Context {
        client,
        output: global.output,
    })
}

/// Whether two spellings of a base URL name the same control plane.
fn same_url(left: &str, right: &str) -> bool {
    let normalize = |url: &str| url.trim().trim_end_matches('/').to_ascii_lowercase();
    normalize(left) == normalize(right)
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// An error for the person at the terminal: what went wrong, how to fix it, and
/// whether it was their input (exit 2) or the system (exit 1).
#[derive(Debug)]
pub struct CliError {
    usage: bool,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    /// A problem with what was asked (bad arguments, not logged in): exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            message: message.into(),
            hint: None,
        }
    }

    /// The API, the network or the local system failed: exit code 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            usage: false,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        if self.usage {
            2
        } else {
            1
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let usage = matches!(error, ClientError::InvalidUrl { .. });
        let hint = match &error {
            ClientError::Api { status: 403, .. } => {
                Some("ask an admin for a higher role, or for a grant on the project".to_owned())
            }
            _ => None,
        };
        Self {
            usage,
            message: error.to_string(),
            hint,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use clap::Parser;

    use super::*;

    /// The binary's shape: global args flattened, client verbs beside others.
    #[derive(Debug, Parser)]
    struct TestArgs {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        TestArgs::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_verb() {
        let args =
            TestArgs::try_parse_from(["nanoscale", "project", "ls", "--output", "json"]).unwrap();
        assert_eq!(args.global.output, Output::Json);
        let args =
            TestArgs::try_parse_from(["nanoscale", "--url", "http://h:1", "whoami"]).unwrap();
        assert_eq!(args.global.url.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn urls_compare_loosely() {
        assert!(same_url("http://127.0.0.1:4000/", "http://127.0.0.1:4000"));
        assert!(same_url("HTTP://Example.com", "http://example.com/"));
        assert!(!same_url("http://a:4000", "http://b:4000"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::failure("x").exit_code(), 1);
        let api = ClientError::from_body(404, br#"{"error":{"code":"not_found","message":"x"}}"#);
        assert_eq!(CliError::from(api).exit_code(), 1);
    }
}
