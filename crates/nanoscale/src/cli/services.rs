//! `service ls|create|show|rm`. Services are named by name (unique in the
//! cluster) or id everywhere.
use clap::{Args, Subcommand};
use nanoscale_client::api::{Project, Service};
use nanoscale_client::Client;
use nanoscale_core::service::{
    HealthSpec, RouteSpec, ServiceSpec, Source, VolumeSpec, DEFAULT_REF,
};
use uuid::Uuid;

use super::output::{print_fields, print_json, short_id, when, Table};
use super::projects::{pick, resolve_project};
use super::{input, CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List services, of every project or of one.
    #[command(visible_alias = "list")]
    Ls {
        /// Only this project's services (name or id).
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Create a service from a git repository (deploy it with `nanoscale deploy`).
    Create(CreateArgs),
    /// Show a service's spec.
    Show {
        /// The service's name or id.
        service: String,
    },
    /// Delete a service and its releases; nodes stop its instances.
    #[command(visible_alias = "delete")]
    Rm {
        /// The service's name or id.
        service: String,
        /// Do not ask for confirmation (required when not in a terminal).
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A DNS label, unique in the cluster: lowercase letters, digits and '-'.
    name: String,
    /// The project it belongs to (name or id).
    #[arg(long, short)]
    project: String,
    /// Repository URL (https://, ssh://, git://, file:// or user@host:path).
    #[arg(long, value_name = "URL")]
    git: String,
    /// Branch, tag or commit to deploy.
    #[arg(long = "ref", value_name = "REF", default_value = DEFAULT_REF)]
    git_ref: String,
    /// Build command [default: detected from the repository].
    #[arg(long, value_name = "CMD")]
    build: Option<String>,
    /// Start command; the app listens on $PORT [default: detected].
    #[arg(long, value_name = "CMD")]
    run: Option<String>,
    /// Where traffic comes from: a host (app.example.com), a path (/api) or both
    /// (example.com/api). Repeatable.
    #[arg(long = "route", value_name = "HOST_OR_PATH", value_parser = parse_route)]
    routes: Vec<RouteSpec>,
    /// How many instances to run.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// HTTP path that answers 2xx when healthy [default: a TCP connect to $PORT].
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// A directory that outlives releases, at PATH in the app's directory
    /// (default: NAME): data:data, uploads:storage/app. Repeatable.
    #[arg(long = "volume", value_name = "NAME[:PATH]", value_parser = parse_volume)]
    volumes: Vec<VolumeSpec>,
}

impl CreateArgs {
    /// The spec the flags describe; the server validates it.
    fn spec(self) -> ServiceSpec {
        ServiceSpec {
            name: self.name,
            source: Source {
                git: self.git,
                git_ref: self.git_ref,
            },
            build: self.build,
            run: self.run,
            env: Default::default(),
            secrets: Default::default(),
            routes: self.routes,
            health: HealthSpec {
                path: self.health_path,
                ..HealthSpec::default()
            },
            resources: Default::default(),
            replicas: self.replicas,
            placement: Default::default(),
            runtime: Default::default(),
            volumes: self.volumes,
        }
    }
}

/// `NAME` or `NAME:PATH`; the server checks both.
pub fn parse_volume(value: &str) -> Result<VolumeSpec, String> {
    let (name, path) = value.split_once(':').unwrap_or((value, value));
    if name.is_empty() || path.is_empty() {
        return Err("a volume is NAME or NAME:PATH, like data or uploads:storage/app".into());
    }
    Ok(VolumeSpec {
        name: name.to_owned(),
        path: path.to_owned(),
    })
}

pub async fn run(context: &Context, command: ServiceCommand) -> CliResult {
    let client = &context.client;
    match command {
        ServiceCommand::Ls { project } => {
            let (services, projects) = match project {
                Some(project) => {
                    let project = resolve_project(client, &project).await?;
                    (
                        client.list_project_services(project.id).await?,
                        vec![project],
                    )
                }
                None => (client.list_services().await?, client.list_projects().await?),
            };
            if context.json() {
                return print_json(&services);
            }
            if services.is_empty() {
                println!("No services yet; create one with `nanoscale service create --project <project> <name> --git <url>`.");
                return Ok(());
            }
            print_services(&services, &projects);
            Ok(())
        }
        ServiceCommand::Create(args) => {
            let project = resolve_project(client, &args.project).await?;
            let service = client.create_service(project.id, &args.spec()).await?;
            if context.json() {
                return print_json(&service);
            }
            println!(
                "Created service {} in project {} ({}).",
                service.spec.name, project.name, service.id
            );
            println!("Next: `nanoscale deploy {}`", service.spec.name);
            Ok(())
        }
        ServiceCommand::Show { service } => {
            let service = resolve_service(client, &service).await?;
            if context.json() {
                return print_json(&service);
            }
            let project = client.get_project(service.project_id).await?;
            print_service(&service, &project);
            Ok(())
        }
        ServiceCommand::Rm { service, yes } => {
            let service = resolve_service(client, &service).await?;
            let question = format!(
                "Delete service {} and all its releases (its instances stop)?",
                service.spec.name
            );
            input::confirm(question, yes).await?;
            client.delete_service(service.id).await?;
            if !context.json() {
                println!("Deleted service {}.", service.spec.name);
            }
            Ok(())
        }
    }
}

/// A service by name, full id, or the short id tables show.
pub async fn resolve_service(client: &Client, input: &str) -> CliResult<Service> {
    if let Ok(id) = Uuid::parse_str(input.trim()) {
        return Ok(client.get_service(id).await?);
    }
    let services = client.list_services().await?;
    pick(services, input, |service| (&service.spec.name, &service.id)).ok_or_else(|| {
        CliError::failure(format!("no service named '{input}'")).hint("see `nanoscale service ls`")
    })
}

pub fn print_services(services: &[Service], projects: &[Project]) {
    let project_name = |id: &Uuid| {
        projects
            .iter()
            .find(|project| project.id == *id)
            .map(|project| project.name.clone())
            .unwrap_or_else(|| short_id(id))
    };
    let mut table = Table::new(&[
        "NAME", "PROJECT", "ID", "REPLICAS", "ROUTES", "SOURCE", "UPDATED",
    ]);
    for service in services {
        table.row(vec![
            service.spec.name.clone(),
            project_name(&service.project_id),
            short_id(&service.id),
            service.spec.replicas.to_string(),
            routes_text(&service.spec.routes),
            format!(
                "{}#{}",
                service.spec.source.git, service.spec.source.git_ref
            ),
            when(&service.updated_at),
        ]);
    }
    print!("{}", table.render());
}

fn print_service(service: &Service, project: &Project) {
    let spec = &service.spec;
    let env: Vec<String> = spec
        .env
        .keys()
        .map(|name| {
            if spec.secrets.contains(name) {
                format!("{name} (secret)")
            } else {
                name.clone()
            }
        })
        .collect();
    let health = match &spec.health.path {
        Some(path) => format!("GET {path} every {}s", spec.health.interval_secs),
        None => format!("TCP connect every {}s", spec.health.interval_secs),
    };
    print_fields(&[
        ("Name", spec.name.clone()),
        ("ID", service.id.to_string()),
        ("Project", project.name.clone()),
        ("Git", spec.source.git.clone()),
        ("Ref", spec.source.git_ref.clone()),
        (
            "Build",
            spec.build.clone().unwrap_or_else(|| "(detected)".into()),
        ),
        (
            "Run",
            spec.run.clone().unwrap_or_else(|| "(detected)".into()),
        ),
        ("Routes", routes_text(&spec.routes)),
        ("Replicas", spec.replicas.to_string()),
        ("Health", health),
        (
            "Env",
            if env.is_empty() {
                "-".into()
            } else {
                env.join(", ")
            },
        ),
        (
            "Release",
            service
                .current_release
                .map(|id| id.to_string())
                .unwrap_or_else(|| "none yet".into()),
        ),
        ("Created", when(&service.created_at)),
        ("Updated", when(&service.updated_at)),
    ]);
}

fn routes_text(routes: &[RouteSpec]) -> String {
    if routes.is_empty() {
        return "-".to_owned();
    }
    routes
        .iter()
        .map(|route| {
            format!(
                "{}{}",
                route.host.as_deref().unwrap_or(""),
                route.path.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--route`: `example.com` is a host, `/api` a path prefix, `example.com/api`
/// both. A leading `http://` or `https://` is ignored.
pub fn parse_route(value: &str) -> Result<RouteSpec, String> {
    let value = value.trim();
    let value = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .unwrap_or(value);
    if value.is_empty() {
        return Err(
            "a route needs a host, a path or both (app.example.com, /api, example.com/api)".into(),
        );
    }
    let route = match value.find('/') {
        Some(0) => RouteSpec {
            path: Some(value.to_owned()),
            ..RouteSpec::default()
        },
        Some(slash) => {
            let path = &value[slash..];
            RouteSpec {
                host: Some(value[..slash].to_owned()),
                path: (path != "/").then(|| path.to_owned()),
                ..RouteSpec::default()
            }
        }
        None => RouteSpec {
            host: Some(value.to_owned()),
            ..RouteSpec::default()
        },
    };
    Ok(route)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use clap::Parser;

    use super::*;

    fn route(host: Option<&str>, path: Option<&str>) -> RouteSpec {
        RouteSpec {
            host: host.map(str::to_owned),
            path: path.map(str::to_owned),
            ..RouteSpec::default()
        }
    }

    #[test]
    fn routes_are_hosts_paths_or_both() {
        let cases = [
            ("example.com", route(Some("example.com"), None)),
            ("/api", route(None, Some("/api"))),
            ("example.com/api", route(Some("example.com"), Some("/api"))),
            (
                "example.com/api/v1",
                route(Some("example.com"), Some("/api/v1")),
            ),
            ("example.com/", route(Some("example.com"), None)),
            (
                "https://example.com/api",
                route(Some("example.com"), Some("/api")),
            ),
            ("*.example.com", route(Some("*.example.com"), None)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_route(input).unwrap(), expected, "{input}");
        }
        assert!(parse_route("").is_err());
        assert!(parse_route("https://").is_err());
    }

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CreateArgs,
    }

    #[test]
    fn create_flags_map_to_the_spec() {
        let wrapper = Wrapper::try_parse_from([
            "create",
            "web",
            "--project",
            "shop",
            "--git",
            "https://example.com/acme/web.git",
            "--route",
            "shop.example.com",
            "--route",
            "/api",
            "--replicas",
            "3",
            "--health-path",
            "/healthz",
            "--run",
            "npm start",
        ])
        .unwrap();
        let spec = wrapper.args.spec();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.source.git, "https://example.com/acme/web.git");
        assert_eq!(spec.source.git_ref, "main");
        assert_eq!(
            spec.routes,
            vec![
                route(Some("shop.example.com"), None),
                route(None, Some("/api"))
            ]
        );
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.health.path.as_deref(), Some("/healthz"));
        assert_eq!(spec.run.as_deref(), Some("npm start"));
        assert_eq!(spec.build, None);
        spec.validate().unwrap();
    }
}
