//! `project ls|create|show|rm`.
use clap::Subcommand;
use nanoscale_client::api::{CreateProject, Project};
use nanoscale_client::Client;
use uuid::Uuid;

use super::output::{matches_id, print_fields, print_json, short_id, when, Table};
use super::services::print_services;
use super::{input, CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List projects.
    #[command(visible_alias = "list")]
    Ls,
    /// Create a project (you become its owner).
    Create {
        /// A DNS label: lowercase letters, digits and '-'.
        name: String,
    },
    /// Show a project and its services.
    Show {
        /// The project's name or id.
        project: String,
    },
    /// Delete a project with all its services and releases.
    #[command(visible_alias = "delete")]
    Rm {
        /// The project's name or id.
        project: String,
        /// Do not ask for confirmation (required when not in a terminal).
        #[arg(long, short)]
        yes: bool,
    },
}

pub async fn run(context: &Context, command: ProjectCommand) -> CliResult {
    let client = &context.client;
    match command {
        ProjectCommand::Ls => {
            let projects = client.list_projects().await?;
            if context.json() {
                return print_json(&projects);
            }
            let mut table = Table::new(&["NAME", "ID", "SERVICES", "CREATED"]);
            for project in &projects {
                table.row(vec![
                    project.name.clone(),
                    short_id(&project.id),
                    project.service_count.to_string(),
                    when(&project.created_at),
                ]);
            }
            table.print_or("No projects yet; create one with `nanoscale project create <name>`.");
            Ok(())
        }
        ProjectCommand::Create { name } => {
            let request = CreateProject {
                name,
                env: Default::default(),
            };
            let project = client.create_project(&request).await?;
            if context.json() {
                return print_json(&project);
            }
            println!("Created project {} ({}).", project.name, project.id);
            println!(
                "Next: `nanoscale service create --project {} <name> --git <url>`",
                project.name
            );
            Ok(())
        }
        ProjectCommand::Show { project } => {
            let project = resolve_project(client, &project).await?;
            if context.json() {
                return print_json(&project);
            }
            let env: Vec<&str> = project.env.keys().map(String::as_str).collect();
            print_fields(&[
                ("Name", project.name.clone()),
                ("ID", project.id.to_string()),
                ("Services", project.service_count.to_string()),
                (
                    "Shared env",
                    if env.is_empty() {
                        "-".into()
                    } else {
                        env.join(", ")
                    },
                ),
                ("Created", when(&project.created_at)),
                ("Updated", when(&project.updated_at)),
            ]);
            let services = client.list_project_services(project.id).await?;
            if !services.is_empty() {
                println!();
                print_services(&services, &[project]);
            }
            Ok(())
        }
        ProjectCommand::Rm { project, yes } => {
            let project = resolve_project(client, &project).await?;
            let question = format!(
                "Delete project {} with its {} service(s) and all their releases?",
                project.name, project.service_count
            );
            input::confirm(question, yes).await?;
            client.delete_project(project.id).await?;
            if !context.json() {
                println!("Deleted project {}.", project.name);
            }
            Ok(())
        }
    }
}

/// A project by name, full id, or the short id tables show.
pub async fn resolve_project(client: &Client, input: &str) -> CliResult<Project> {
    if let Ok(id) = Uuid::parse_str(input.trim()) {
        return Ok(client.get_project(id).await?);
    }
    let projects = client.list_projects().await?;
    pick(projects, input, |project| (&project.name, &project.id)).ok_or_else(|| {
        CliError::failure(format!("no project named '{input}'")).hint("see `nanoscale project ls`")
    })
}

/// The item whose name is `input`, or else the one whose id ends with it.
pub fn pick<T>(items: Vec<T>, input: &str, key: impl Fn(&T) -> (&String, &Uuid)) -> Option<T> {
    let input = input.trim();
    let by_name = items.iter().position(|item| key(item).0 == input);
    let index = by_name.or_else(|| {
        let mut matching = items
            .iter()
            .enumerate()
            .filter(|(_, item)| matches_id(input, key(item).1));
        let first = matching.next()?.0;
        // An ambiguous short id names nothing.
        matching.next().is_none().then_some(first)
    })?;
    items.into_iter().nth(index)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn pick_prefers_names_then_short_ids() {
        let a = Uuid::parse_str("0190a0b0-0000-7000-8000-0000000000aa").unwrap();
        let b = Uuid::parse_str("0190a0b0-0000-7000-8000-0000000000bb").unwrap();
        let items = vec![("shop".to_owned(), a), ("blog".to_owned(), b)];
        fn key(item: &(String, Uuid)) -> (&String, &Uuid) {
            (&item.0, &item.1)
        }
        assert_eq!(pick(items.clone(), "blog", key).unwrap().1, b);
        assert_eq!(pick(items.clone(), "000000aa", key).unwrap().1, a);
        assert!(pick(items.clone(), "nope", key).is_none());
        let twins = vec![("x".to_owned(), a), ("y".to_owned(), a)];
        assert!(pick(twins, "000000aa", key).is_none());
    }
}
