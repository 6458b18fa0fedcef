//! `deploy`, `releases`, `rollback` and `logs`.
use clap::Args;
use futures::StreamExt;
use nanoscale_client::api::{LogEntry, Release, ReleaseSelector};
use nanoscale_client::LogFrame;
use uuid::Uuid;

use super::output::{matches_id, print_json, print_json_line, short_commit, short_id, when, Table};
use super::services::resolve_service;
use super::{CliError, CliResult, Context};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service's name or id.
    service: String,
    /// Deploy this branch, tag or commit instead of the service's ref.
    #[arg(long = "ref", value_name = "REF")]
    git_ref: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The service's name or id.
    service: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service's name or id.
    service: String,
    /// The release to return to: its number (as `nanoscale releases` shows) or id.
    release: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service's name or id.
    service: String,
    /// Keep printing new lines as they are written (with --build, until the build
    /// ends); a broken connection is opened again without repeating lines.
    #[arg(long, short)]
    follow: bool,
    /// The build output of this release number instead of the instances' logs.
    #[arg(long, value_name = "RELEASE")]
    build: Option<i64>,
    /// How many of the newest lines to show.
    #[arg(long, default_value_t = 100)]
    tail: u32,
}

pub async fn deploy(context: &Context, args: DeployArgs) -> CliResult {
    let service = resolve_service(&context.client, &args.service).await?;
    let release = context
        .client
        .deploy(service.id, args.git_ref.as_deref())
        .await?;
    if context.json() {
        return print_json(&release);
    }
    println!(
        "Release {} of {} {}: commit {} ({}).",
        release.number,
        service.spec.name,
        release.status.as_str(),
        short_commit(&release.commit),
        release.git_ref
    );
    println!(
        "Follow it with `nanoscale events --service {} -f`",
        service.spec.name
    );
    Ok(())
}

pub async fn instances(context: &Context, args: ReleasesArgs) -> CliResult {
    let service = resolve_service(&context.client, &args.service).await?;
    let instances = context.client.list_instances(service.id).await?;
    if context.json() {
        return print_json(&instances);
    }
    let mut table = Table::new(&["ID", "NODE", "RELEASE", "PORT", "PID", "STATUS", "RESTARTS"]);
    for instance in &instances {
        table.row(vec![
            instance.id.clone(),
            instance.node.clone(),
            instance.release_number.to_string(),
            instance.port.to_string(),
            instance
                .pid
                .map_or_else(|| "-".into(), |pid| pid.to_string()),
            if instance.node_reachable {
                instance.status.as_str().to_owned()
            } else {
                format!(
                    "unknown (node unreachable, was {})",
                    instance.status.as_str()
                )
            },
            instance.restarts.to_string(),
        ]);
    }
    table.print_or(&format!(
        "No instances of {} are running (deploy it with `nanoscale deploy {}`).",
        service.spec.name, service.spec.name
    ));
    Ok(())
}

pub async fn list(context: &Context, args: ReleasesArgs) -> CliResult {
    let service = resolve_service(&context.client, &args.service).await?;
    let releases = context.client.list_releases(service.id).await?;
    if context.json() {
        return print_json(&releases);
    }
    let mut table = Table::new(&["NUMBER", "STATUS", "COMMIT", "REF", "ID", "CREATED", "NOTE"]);
    for release in &releases {
        let current = service.current_release == Some(release.id);
        let mut note = Vec::new();
        if current {
            note.push("current".to_owned());
        }
        if let Some(target) = release.rollback_of {
            note.push(format!("rollback to {}", release_label(&releases, target)));
        }
        if let Some(reason) = &release.reason {
            note.push(reason.clone());
        }
        table.row(vec![
            release.number.to_string(),
            release.status.as_str().to_owned(),
            short_commit(&release.commit).to_owned(),
            release.git_ref.clone(),
            short_id(&release.id),
            when(&release.created_at),
            note.join("; "),
        ]);
    }
    table.print_or(&format!(
        "No releases yet; create one with `nanoscale deploy {}`.",
        service.spec.name
    ));
    Ok(())
}

pub async fn rollback(context: &Context, args: RollbackArgs) -> CliResult {
    let service = resolve_service(&context.client, &args.service).await?;
    let selector = match parse_release(&args.release)? {
        Some(selector) => selector,
        // A short id from the releases table: find the full one.
        None => {
            let releases = context.client.list_releases(service.id).await?;
            let found = releases
                .iter()
                .find(|release| matches_id(&args.release, &release.id))
                .ok_or_else(|| {
                    CliError::failure(format!(
                        "{} has no release '{}'",
                        service.spec.name, args.release
                    ))
                    .hint(format!("see `nanoscale releases {}`", service.spec.name))
                })?;
            ReleaseSelector::Id(found.id)
        }
    };
    let release = context.client.rollback(service.id, selector).await?;
    if context.json() {
        return print_json(&release);
    }
    println!(
        "Release {} of {} {}: back to commit {} ({}).",
        release.number,
        service.spec.name,
        release.status.as_str(),
        short_commit(&release.commit),
        release.git_ref
    );
    Ok(())
}

/// The newest lines of a service's instances, or of one build; with `-f` the
/// live stream of them, until the build is over (with `--build`) or Ctrl-C.
pub async fn logs(context: &Context, args: LogsArgs) -> CliResult {
    let service = resolve_service(&context.client, &args.service).await?;
    let mut query = nanoscale_client::api::LogQuery {
        tail: Some(args.tail),
        build: args.build,
    };
    if !args.follow {
        let entries = context.client.service_logs(service.id, &query).await?;
        if context.json() {
            return print_json(&entries);
        }
        entries.iter().for_each(print_entry);
        if entries.is_empty() {
            eprintln!("No log lines yet for {}.", service.spec.name);
        }
        return Ok(());
    }
    // Following: every line once, in order, as JSON lines with --output json. A
    // broken connection is opened again; the newest lines it repeats are skipped.
    let mut seen = nanoscale_core::logs::Seen::default();
    let mut wait = RECONNECT_FIRST;
    loop {
        let mut stream = match context.client.stream_service_logs(service.id, &query).await {
            Ok(stream) => stream,
            // The server answered: the service is gone, or this login may not read it.
            Err(error @ nanoscale_client::ClientError::Api { .. }) => return Err(error.into()),
            Err(error) => {
                eprintln!(
                    "cannot follow the logs ({error}); trying again in {}s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(LogFrame::Line(entry)) => {
                    wait = RECONNECT_FIRST;
                    if !seen.admit(&entry) {
                        continue;
                    }
                    if context.json() {
                        print_json_line(&entry)?;
                    } else {
                        print_entry(&entry);
                    }
                }
                Ok(LogFrame::End { reason }) => {
                    if !context.json() {
                        eprintln!("({reason})");
                    }
                    return Ok(());
                }
                Err(error) => {
                    eprintln!("the log stream broke ({error}); opening it again");
                    break;
                }
            }
        }
        query.tail = Some(RECONNECT_TAIL);
        tokio::time::sleep(wait).await;
    }
}

/// After a broken stream: the first wait, the longest, and the newest lines asked
/// for again (those already printed are skipped).
const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
const RECONNECT_TAIL: u32 = 1000;

fn print_entry(entry: &LogEntry) {
    println!(
        "{} {} {} {}",
        entry.at,
        entry.source,
        if entry.stream == "stderr" { "!" } else { " " },
        super::output::printable(&entry.text)
    );
}

/// A release number, or a full id; `None` for anything else (maybe a short id).
fn parse_release(input: &str) -> CliResult<Option<ReleaseSelector>> {
    let input = input.trim();
    if let Ok(number) = input.parse::<i64>() {
        if number < 1 {
            return Err(CliError::usage("release numbers start at 1"));
        }
        return Ok(Some(ReleaseSelector::Number(number)));
    }
    Ok(Uuid::parse_str(input).ok().map(ReleaseSelector::Id))
}

fn release_label(releases: &[Release], id: Uuid) -> String {
    releases
        .iter()
        .find(|release| release.id == id)
        .map(|release| release.number.to_string())
        .unwrap_or_else(|| short_id(&id))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn releases_are_numbers_or_ids() {
        assert_eq!(
            parse_release("3").unwrap(),
            Some(ReleaseSelector::Number(3))
        );
        let id = Uuid::now_v7();
        assert_eq!(
            parse_release(&id.to_string()).unwrap(),
            Some(ReleaseSelector::Id(id))
        );
        assert_eq!(parse_release("456789ab").unwrap(), None);
        assert_eq!(parse_release("0").unwrap_err().exit_code(), 2);
    }
}
