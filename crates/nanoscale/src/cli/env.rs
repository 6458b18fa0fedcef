//! `env ls|set|unset|reveal`: a service's environment variables.
use clap::Subcommand;
use nanoscale_client::api::SetEnvVar;
use nanoscale_core::service::validate_env_var;

use super::output::{print_json, Table};
use super::services::resolve_service;
use super::{input, CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List a service's variables (secret values are shown as ********).
    #[command(visible_alias = "list")]
    Ls {
        /// The service's name or id.
        service: String,
    },
    /// Set variables. A bare NAME (no '=') reads its value from stdin, so a
    /// secret need not appear on the command line.
    Set {
        /// The service's name or id.
        service: String,
        /// NAME=VALUE pairs, or one bare NAME to read from stdin.
        #[arg(required = true, value_name = "NAME=VALUE")]
        assignments: Vec<String>,
        /// Store the values as secrets: never shown again by the API.
        #[arg(long)]
        secret: bool,
    },
    /// Print one variable's value, a secret's included. Needs the right to edit the
    /// service; the control plane's audit log records every reveal.
    Reveal {
        /// The service's name or id.
        service: String,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove variables.
    Unset {
        /// The service's name or id.
        service: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// One `NAME=VALUE` argument, or a bare `NAME` whose value comes from stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Value { name: String, value: String },
    FromStdin { name: String },
}

impl Assignment {
    fn name(&self) -> &str {
        match self {
            Assignment::Value { name, .. } | Assignment::FromStdin { name } => name,
        }
    }
}

/// Parses and checks every argument before anything is sent, so a typo in the
/// third pair does not leave the first two set.
pub fn parse_assignments(arguments: &[String]) -> CliResult<Vec<Assignment>> {
    let mut assignments = Vec::with_capacity(arguments.len());
    for argument in arguments {
        let assignment = match argument.split_once('=') {
            Some((name, value)) => Assignment::Value {
                name: name.to_owned(),
                value: value.to_owned(),
            },
            None => Assignment::FromStdin {
                name: argument.clone(),
            },
        };
        let value = match &assignment {
            Assignment::Value { value, .. } => value.as_str(),
            Assignment::FromStdin { .. } => "",
        };
        validate_env_var(assignment.name(), assignment.name(), value).map_err(|error| {
            CliError::usage(format!("'{argument}': {}", error.message))
                .hint("write NAME=VALUE, e.g. DATABASE_URL=postgres://db/app")
        })?;
        if assignments
            .iter()
            .any(|seen: &Assignment| seen.name() == assignment.name())
        {
            return Err(CliError::usage(format!(
                "{} is given twice",
                assignment.name()
            )));
        }
        assignments.push(assignment);
    }
    let from_stdin = assignments
        .iter()
        .filter(|assignment| matches!(assignment, Assignment::FromStdin { .. }))
        .count();
    if from_stdin > 1 {
        return Err(
            CliError::usage("only one bare NAME can read its value from stdin")
                .hint("give the others as NAME=VALUE"),
        );
    }
    Ok(assignments)
}

pub async fn run(context: &Context, command: EnvCommand) -> CliResult {
    let client = &context.client;
    match command {
        EnvCommand::Ls { service } => {
            let service = resolve_service(client, &service).await?;
            print_env(context, service.id).await
        }
        EnvCommand::Set {
            service,
            assignments,
            secret,
        } => {
            let mut pairs = Vec::new();
            for assignment in parse_assignments(&assignments)? {
                pairs.push(match assignment {
                    Assignment::Value { name, value } => (name, value),
                    Assignment::FromStdin { name } => {
                        let value = input::secret_from_stdin("value").await?;
                        (name, value)
                    }
                });
            }
            let service = resolve_service(client, &service).await?;
            let mut done = Vec::new();
            for (name, value) in pairs {
                let request = SetEnvVar { value, secret };
                if let Err(error) = client.set_env(service.id, &name, &request).await {
                    return Err(partial(error.into(), &done, "set"));
                }
                done.push(name);
            }
            if context.json() {
                return print_env(context, service.id).await;
            }
            let kind = if secret { " (secret)" } else { "" };
            println!("Set {} on {}{kind}.", done.join(", "), service.spec.name);
            println!(
                "It takes effect at the next deploy: `nanoscale deploy {}`",
                service.spec.name
            );
            Ok(())
        }
        EnvCommand::Reveal { service, name } => {
            let service = resolve_service(client, &service).await?;
            let variable =
                client
                    .reveal_env(service.id, &name)
                    .await
                    .map_err(|error| match error.status() {
                        Some(404) => CliError::failure(format!(
                            "{} has no variable {name}",
                            service.spec.name
                        ))
                        .hint(format!(
                            "see them with `nanoscale env ls {}`",
                            service.spec.name
                        )),
                        _ => error.into(),
                    })?;
            if context.json() {
                return print_json(&variable);
            }
            // The value alone, so that `$(nanoscale env reveal web TOKEN)` works.
            println!("{}", variable.value);
            Ok(())
        }
        EnvCommand::Unset { service, names } => {
            let service = resolve_service(client, &service).await?;
            let mut done = Vec::new();
            for name in names {
                if let Err(error) = client.unset_env(service.id, &name).await {
                    let error = match error.status() {
                        Some(404) => CliError::failure(format!(
                            "{} has no variable {name}",
                            service.spec.name
                        )),
                        _ => error.into(),
                    };
                    return Err(partial(error, &done, "removed"));
                }
                done.push(name);
            }
            if context.json() {
                return print_env(context, service.id).await;
            }
            println!("Removed {} from {}.", done.join(", "), service.spec.name);
            println!(
                "It takes effect at the next deploy: `nanoscale deploy {}`",
                service.spec.name
            );
            Ok(())
        }
    }
}

/// Says which variables were already changed when a later one failed.
fn partial(error: CliError, done: &[String], verb: &str) -> CliError {
    if done.is_empty() {
        return error;
    }
    let note = format!("already {verb}: {}", done.join(", "));
    match error.hint.clone() {
        Some(hint) => error.hint(format!("{hint}; {note}")),
        None => error.hint(note),
    }
}

async fn print_env(context: &Context, service_id: uuid::Uuid) -> CliResult {
    let variables = context.client.list_env(service_id).await?;
    if context.json() {
        return print_json(&variables);
    }
    let mut table = Table::new(&["NAME", "VALUE", "SECRET"]);
    for variable in &variables {
        table.row(vec![
            variable.name.clone(),
            variable.value.clone(),
            if variable.secret { "yes" } else { "" }.to_owned(),
        ]);
    }
    table.print_or("No variables; set some with `nanoscale env set <service> NAME=VALUE`.");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        let parsed = parse_assignments(&strings(&[
            "A=1",
            "DATABASE_URL=postgres://u:p@db/x?a=b",
            "EMPTY=",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                Assignment::Value {
                    name: "A".into(),
                    value: "1".into()
                },
                Assignment::Value {
                    name: "DATABASE_URL".into(),
                    value: "postgres://u:p@db/x?a=b".into()
                },
                Assignment::Value {
                    name: "EMPTY".into(),
                    value: "".into()
                },
            ]
        );
    }

    #[test]
    fn a_bare_name_reads_from_stdin_once() {
        assert_eq!(
            parse_assignments(&strings(&["TOKEN"])).unwrap(),
            vec![Assignment::FromStdin {
                name: "TOKEN".into()
            }]
        );
        let error = parse_assignments(&strings(&["A", "B"])).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn bad_names_and_duplicates_are_usage_errors() {
        for bad in [&["1A=x"][..], &["=x"], &["A-B=x"], &["A=1", "A=2"]] {
            let error = parse_assignments(&strings(bad)).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        let error = parse_assignments(&strings(&["my-var=1"])).unwrap_err();
        assert!(
            error.message.starts_with("'my-var=1': "),
            "{}",
            error.message
        );
    }
}
