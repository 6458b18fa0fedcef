//! `setup`, `login`, `logout`, `whoami`: getting a token onto this machine.
use std::time::Duration;

use clap::Args;
use nanoscale_client::api::{CreateToken, Credentials, Me};
use nanoscale_client::Client;
use uuid::Uuid;

use super::config_file::{self, CliConfig};
use super::output::{print_fields, print_json};
use super::{input, CliError, CliResult, Context, GlobalArgs};

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The control plane, e.g. http://127.0.0.1:4000 [default: --url or the saved one].
    url: Option<String>,
    /// Name of the first admin.
    #[arg(long, default_value = "admin")]
    username: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The control plane, e.g. https://paas.example.com [default: --url or the saved one].
    url: Option<String>,
    /// Your user name; the password comes from NANOSCALE_PASSWORD, stdin or a prompt.
    #[arg(long, required_unless_present = "token_stdin")]
    username: Option<String>,
    /// Read an existing API token from stdin instead of logging in with a password.
    #[arg(long, conflicts_with = "username")]
    token_stdin: bool,
}

/// Creates the first admin, then logs in as them.
pub async fn setup(global: &GlobalArgs, args: SetupArgs) -> CliResult {
    let url = target_url(args.url, global)?;
    let client = Client::new(&url, None)?;
    if !client.setup_status().await?.needed {
        return Err(CliError::usage(format!("{url} is already set up"))
            .hint(format!("run `nanoscale login {url} --username <name>`")));
    }
    let password = input::password("Password for the new admin: ", true).await?;
    let credentials = Credentials {
        username: args.username,
        password,
    };
    let user = client.setup(&credentials).await?;
    if global.output == super::Output::Table {
        println!("Created the first admin, {}.", user.username);
    }
    password_login(global, &client, credentials).await
}

/// Logs in and saves a new API token (or a pasted one) to the config file.
pub async fn login(global: &GlobalArgs, args: LoginArgs) -> CliResult {
    let url = target_url(args.url, global)?;
    if args.token_stdin {
        let token = input::secret_from_stdin("API token").await?;
        let client = Client::new(&url, Some(token.clone()))?;
        let me = client.me().await.map_err(|error| match error.status() {
            Some(401) => CliError::failure("the server does not accept this token")
                .hint("it may be revoked or expired; create one with `nanoscale token create`"),
            _ => error.into(),
        })?;
        return save_and_report(global, &client, token, None, &me).await;
    }
    let Some(username) = args.username else {
        return Err(CliError::usage("--username is required"));
    };
    let password = input::password(&format!("Password for {username}: "), false).await?;
    let client = Client::new(&url, None)?;
    let credentials = Credentials { username, password };
    password_login(global, &client, credentials).await
}

/// Revokes the saved token when this CLI created it (its id is saved), and
/// forgets it. A pasted token's id is unknown (the API does not tell a bearer
/// which token it is), so that one is only forgotten, and the message says so.
pub async fn logout(global: &GlobalArgs) -> CliResult {
    let path = config_file::path()?;
    let config = config_file::load_for_update(&path)?.unwrap_or_default();
    let json = global.output == super::Output::Json;
    let Some(token) = config.token.clone() else {
        if json {
            return print_json(&serde_json::json!({"forgotten": false, "revoked": false}));
        }
        println!("Not logged in; nothing to forget.");
        return Ok(());
    };
    let revoked = match (&config.url, config.token_id) {
        (Some(url), Some(id)) => match Client::new(url, Some(token)) {
            Ok(client) => client
                .revoke_token(id)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        _ => Err("its id is unknown (it was pasted with --token-stdin)".to_owned()),
    };
    config_file::save(
        &path,
        &CliConfig {
            url: config.url,
            token: None,
            token_id: None,
        },
    )?;
    if json {
        return print_json(&serde_json::json!({"forgotten": true, "revoked": revoked.is_ok()}));
    }
    match revoked {
        Ok(()) => println!("Logged out: the token is revoked and forgotten."),
        Err(reason) => {
            let id = config
                .token_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "<id>".to_owned());
            println!("Token forgotten locally, but not revoked: {reason}.");
            println!("It still works until revoked: `nanoscale token revoke {id}` (see `nanoscale token ls`).");
        }
    }
    if std::env::var_os("NANOSCALE_TOKEN").is_some() {
        println!("Note: NANOSCALE_TOKEN is set in your environment and is still used.");
    }
    Ok(())
}

pub async fn whoami(context: &Context) -> CliResult {
    let me = context.client.me().await?;
    if context.json() {
        return print_json(&me);
    }
    print_me(context.client.base_url(), &me);
    Ok(())
}

/// The URL a setup or login is for: the argument, else --url/NANOSCALE_URL, else
/// the saved one.
fn target_url(argument: Option<String>, global: &GlobalArgs) -> CliResult<String> {
    if let Some(url) = argument.or_else(|| global.url.clone()) {
        return Ok(url);
    }
    let path = config_file::path()?;
    config_file::load_for_update(&path)?
        .and_then(|config| config.url)
        .ok_or_else(|| {
            CliError::usage("which control plane? give its URL")
                .hint("for example `nanoscale login http://127.0.0.1:4000 --username admin`")
        })
}

/// Password login: a session just long enough to create an API token with the
/// user's role, then the session is ended and the token saved.
async fn password_login(
    global: &GlobalArgs,
    client: &Client,
    credentials: Credentials,
) -> CliResult {
    let (login, session) = client
        .start_session(&credentials)
        .await
        .map_err(|error| match error.status() {
            Some(401) => CliError::failure("wrong user name or password"),
            _ => error.into(),
        })?;
    let request = CreateToken {
        name: format!("cli@{}", host_name()),
        role: login.user.role,
        expires_in: None,
    };
    let created = session.create_token(&request).await;
    // The session has done its job either way; an error ending it changes nothing.
    let _ = session.logout().await;
    let created = created?;
    let client = Client::new(client.base_url(), Some(created.token.clone()))?;
    let me = client.me().await?;
    save_and_report(global, &client, created.token, Some(created.id), &me).await
}

async fn save_and_report(
    global: &GlobalArgs,
    client: &Client,
    token: String,
    token_id: Option<Uuid>,
    me: &Me,
) -> CliResult {
    let path = config_file::path()?;
    if let Some(previous) = config_file::load_for_update(&path)? {
        revoke_replaced(previous, &token).await;
    }
    let config = CliConfig {
        url: Some(client.base_url().to_owned()),
        token: Some(token),
        token_id,
    };
    config_file::save(&path, &config)?;
    if global.output == super::Output::Json {
        return print_json(me);
    }
    print_me(client.base_url(), me);
    println!("Token saved to {}.", path.display());
    Ok(())
}

/// A new login replaces the saved token: revoke the old one if this CLI created
/// it, so `cli@host` tokens do not pile up. Best effort: it may be gone already.
async fn revoke_replaced(previous: CliConfig, new_token: &str) {
    let (Some(url), Some(token), Some(id)) = (previous.url, previous.token, previous.token_id)
    else {
        return;
    };
    if token == new_token {
        return;
    }
    if let Ok(client) = Client::new(&url, Some(token)) {
        // A control plane that is gone must not hold up the new login.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.revoke_token(id)).await;
    }
}

fn print_me(url: &str, me: &Me) {
    print_fields(&[
        ("Logged in to", url.to_owned()),
        ("User", me.user.username.clone()),
        ("Role", me.role.to_string()),
        ("Via", me.auth.clone()),
    ]);
}

/// This machine's name, for naming its token (`cli@laptop`).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.chars().filter(|c| !c.is_control()).take(60).collect())
        .unwrap_or_else(|| "unknown-host".to_owned())
}
