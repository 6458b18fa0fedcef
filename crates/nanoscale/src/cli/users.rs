//! `user ls|create|rm` (admins only).
use clap::Subcommand;
use nanoscale_client::api::{CreateUser, User};
use nanoscale_client::Client;
use nanoscale_core::Role;
use uuid::Uuid;

use super::output::{print_json, short_id, when, Table};
use super::projects::pick;
use super::tokens::parse_role;
use super::{input, CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users.
    #[command(visible_alias = "list")]
    Ls,
    /// Create a user; the password comes from NANOSCALE_PASSWORD, stdin or a prompt.
    Create {
        /// Their login name.
        name: String,
        /// viewer (read only), deployer (their projects) or admin (everything).
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Delete a user.
    #[command(visible_alias = "delete")]
    Rm {
        /// The user's name or id.
        user: String,
    },
}

pub async fn run(context: &Context, command: UserCommand) -> CliResult {
    let client = &context.client;
    match command {
        UserCommand::Ls => {
            let users = client.list_users().await?;
            if context.json() {
                return print_json(&users);
            }
            let mut table = Table::new(&["NAME", "ID", "ROLE", "CREATED"]);
            for user in &users {
                table.row(vec![
                    user.username.clone(),
                    short_id(&user.id),
                    user.role.to_string(),
                    when(&user.created_at),
                ]);
            }
            table.print_or("No users.");
            Ok(())
        }
        UserCommand::Create { name, role } => {
            let password = input::password(&format!("Password for {name}: "), true).await?;
            let request = CreateUser {
                username: name,
                password,
                role,
            };
            let user = client.create_user(&request).await?;
            if context.json() {
                return print_json(&user);
            }
            println!("Created {} {} ({}).", user.role, user.username, user.id);
            Ok(())
        }
        UserCommand::Rm { user } => {
            let user = resolve_user(client, &user).await?;
            client.delete_user(user.id).await?;
            if !context.json() {
                println!("Deleted user {}.", user.username);
            }
            Ok(())
        }
    }
}

async fn resolve_user(client: &Client, input: &str) -> CliResult<User> {
    if let Ok(id) = Uuid::parse_str(input.trim()) {
        return Ok(client.get_user(id).await?);
    }
    let users = client.list_users().await?;
    pick(users, input, |user| (&user.username, &user.id)).ok_or_else(|| {
        CliError::failure(format!("no user named '{input}'")).hint("see `nanoscale user ls`")
    })
}
