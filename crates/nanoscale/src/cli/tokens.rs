//! `token create|ls|revoke`: API tokens for scripts and CI.
use clap::Subcommand;
use nanoscale_client::api::{ApiToken, CreateToken};
use nanoscale_core::Role;
use uuid::Uuid;

use super::output::{matches_id, print_json, short_id, when, when_or, Table};
use super::{CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// A label to recognize it by, e.g. "ci".
        name: String,
        /// viewer, deployer or admin; at most your own role [default: your role].
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Lifetime in seconds (at least 60) [default: never expires].
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
    },
    /// List your tokens (an admin sees everyone's). Secrets are never shown.
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke a token at once.
    Revoke {
        /// The token's id (full, or as `nanoscale token ls` shows it).
        id: String,
    },
}

pub fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(&value.to_ascii_lowercase())
        .ok_or_else(|| format!("'{value}' is not a role: use viewer, deployer or admin"))
}

pub async fn run(context: &Context, command: TokenCommand) -> CliResult {
    let client = &context.client;
    match command {
        TokenCommand::Create {
            name,
            role,
            expires_in,
        } => {
            let role = match role {
                Some(role) => role,
                None => client.me().await?.role,
            };
            let request = CreateToken {
                name,
                role,
                expires_in,
            };
            let created = client.create_token(&request).await?;
            if context.json() {
                return print_json(&created);
            }
            let expires = created
                .expires_at
                .map(|at| format!("expires {}", when(&at)))
                .unwrap_or_else(|| "never expires".to_owned());
            eprintln!(
                "Created token {} ({}), role {}, {expires}.",
                created.name, created.id, created.role
            );
            eprintln!("Copy it now: it will not be shown again.");
            // Alone on stdout, so `token=$(nanoscale token create ci)` works.
            println!("{}", created.token);
            Ok(())
        }
        TokenCommand::Ls => {
            let tokens = client.list_tokens().await?;
            if context.json() {
                return print_json(&tokens);
            }
            let owners = owner_names(client).await?;
            let owner = |id: &Uuid| {
                owners
                    .iter()
                    .find(|(user_id, _)| user_id == id)
                    .map(|(_, name)| name.clone())
                    .unwrap_or_else(|| short_id(id))
            };
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "ROLE",
                "OWNER",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            ]);
            for token in &tokens {
                table.row(vec![
                    short_id(&token.id),
                    token.name.clone(),
                    token.role.to_string(),
                    owner(&token.user_id),
                    when(&token.created_at),
                    when_or(token.expires_at.as_ref(), "never"),
                    when_or(token.last_used_at.as_ref(), "never"),
                ]);
            }
            table.print_or("No tokens.");
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            let id = match Uuid::parse_str(id.trim()) {
                Ok(id) => id,
                Err(_) => find_token(&client.list_tokens().await?, &id)?,
            };
            client.revoke_token(id).await?;
            if !context.json() {
                println!("Revoked token {id}.");
            }
            Ok(())
        }
    }
}

/// User names for the OWNER column: an admin sees everyone's tokens, anyone
/// else only their own.
async fn owner_names(client: &nanoscale_client::Client) -> CliResult<Vec<(Uuid, String)>> {
    let me = client.me().await?;
    if me.role == Role::Admin {
        let users = client.list_users().await?;
        return Ok(users
            .into_iter()
            .map(|user| (user.id, user.username))
            .collect());
    }
    Ok(vec![(me.user.id, me.user.username)])
}

fn find_token(tokens: &[ApiToken], input: &str) -> CliResult<Uuid> {
    let mut matching = tokens.iter().filter(|token| matches_id(input, &token.id));
    match (matching.next(), matching.next()) {
        (Some(token), None) => Ok(token.id),
        (Some(_), Some(_)) => Err(CliError::usage(format!(
            "'{input}' matches several tokens; give the full id"
        ))),
        (None, _) => {
            Err(CliError::failure(format!("no token '{input}'")).hint("see `nanoscale token ls`"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!(parse_role("Deployer"), Ok(Role::Deployer));
        assert!(parse_role("root")
            .unwrap_err()
            .contains("viewer, deployer or admin"));
    }
}
