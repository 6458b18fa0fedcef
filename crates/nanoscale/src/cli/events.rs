//! `events [-f]`: the timeline, and following it live over Server-Sent Events.
use std::collections::HashSet;

use chrono::Local;
use clap::Args;
use futures::StreamExt;
use nanoscale_client::api::{Event, EventFilter};
use nanoscale_client::ClientError;

use super::output::{print_json, print_json_line, printable};
use super::projects::resolve_project;
use super::services::resolve_service;
use super::{CliError, CliResult, Context};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this service's events (name or id).
    #[arg(long, short)]
    service: Option<String>,
    /// Only this project's events (name or id).
    #[arg(long, short)]
    project: Option<String>,
    /// A kind (release.queued) or a prefix ending in '.' (release.).
    #[arg(long, short)]
    kind: Option<String>,
    /// How many past events to show (1-1000).
    #[arg(long, short = 'n', default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Then keep printing new events until Ctrl-C. With --output json, prints one
    /// JSON event per line.
    #[arg(long, short)]
    follow: bool,
}

pub async fn run(context: &Context, args: EventsArgs) -> CliResult {
    let client = &context.client;
    let mut filter = EventFilter {
        kind: args.kind,
        limit: Some(args.limit),
        ..EventFilter::default()
    };
    if let Some(service) = &args.service {
        filter.service_id = Some(resolve_service(client, service).await?.id);
    }
    if let Some(project) = &args.project {
        filter.project_id = Some(resolve_project(client, project).await?.id);
    }
    if !args.follow {
        let events = client.list_events(&filter).await?;
        if context.json() {
            return print_json(&events);
        }
        if events.is_empty() {
            println!("No events.");
            return Ok(());
        }
        print_header();
        for event in events.iter().rev() {
            print_line(event);
        }
        return Ok(());
    }
    // Subscribe before listing, so nothing falls between the two; an event in
    // both is printed once.
    let mut stream = client.stream_events(&filter).await?;
    let past = client.list_events(&filter).await?;
    let seen: HashSet<_> = past.iter().map(|event| event.id).collect();
    if !context.json() {
        print_header();
    }
    for event in past.iter().rev() {
        show(context, event)?;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(event)) if seen.contains(&event.id) => {}
                Some(Ok(event)) => show(context, &event)?,
                Some(Err(ClientError::Lagged { missed })) => eprintln!(
                    "warning: missed {missed} events while falling behind; run `nanoscale events` to see them"
                ),
                Some(Err(error)) => return Err(error.into()),
                None => {
                    return Err(CliError::failure("the server closed the event stream")
                        .hint("run the command again to reconnect"))
                }
            }
        }
    }
}

fn show(context: &Context, event: &Event) -> CliResult {
    if context.json() {
        return print_json_line(event);
    }
    print_line(event);
    Ok(())
}

// Events stream in one by one, so columns have fixed widths instead of being
// measured like other tables.
fn print_header() {
    println!("{:<14}  {:<8}  {:<20}  MESSAGE", "TIME", "SEVERITY", "KIND");
}

fn print_line(event: &Event) {
    println!("{}", format_line(event));
}

fn format_line(event: &Event) -> String {
    let time = event.time.with_timezone(&Local).format("%m-%d %H:%M:%S");
    format!(
        "{:<14}  {:<8}  {:<20}  {}",
        time.to_string(),
        printable(&event.severity),
        printable(&event.kind),
        printable(&event.message)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn lines_have_fixed_columns_and_no_control_characters() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "0190a0b0-0000-7000-8000-000000000001",
            "time": "2025-01-01T00:00:00Z",
            "kind": "release.queued",
            "severity": "info",
            "message": "release 1 of web queued\u{1b}[2J",
            "project_id": null, "service_id": null, "release_id": null,
            "node_id": null, "actor_id": null
        }))
        .unwrap();
        let line = format_line(&event);
        assert_eq!(line.len(), line.chars().count());
        assert_eq!(
            &line[14..],
            "  info      release.queued        release 1 of web queued?[2J"
        );
    }
}
