//! Bus commands: migrate, enqueue, messages, dlq, events tail, agents.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use model::{Intent, MessageStatus, NewMessage};
use store::{EventFilter, MessageFilter, PageRequest};

use crate::ExitWith;
use crate::args::{DlqCommand, EnqueueArgs, EventsCommand, Global, MessagesArgs};
use crate::settings::{database_url, open_store};

fn usage(text: String) -> anyhow::Error {
    ExitWith(2, format!("error: {text}")).into()
}

pub async fn migrate(global: &Global) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    writeln!(
        std::io::stdout(),
        "migrations applied to {} ({})",
        store::redact_url(&database_url(global)),
        store.kind().name()
    )?;
    store.close().await;
    Ok(())
}

pub async fn enqueue(global: &Global, args: EnqueueArgs) -> anyhow::Result<()> {
    let intent = Intent::new(args.intent.clone()).map_err(|e| usage(format!("--intent {:?} {e}", args.intent)))?;
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).map_err(|e| usage(format!("--payload is not valid JSON: {e}")))?;
    let mut message = NewMessage::new(args.service, args.role, intent, payload)
        .with_tenant(args.tenant)
        .with_shard(args.shard)
        .with_priority(args.priority)
        .with_max_attempts(args.max_attempts);
    message.idempotency_key = args.idempotency_key;
    if let Err(err) = message.validate(model::message::DEFAULT_MAX_PAYLOAD_BYTES) {
        return Err(usage(err.to_string()));
    }
    let store = open_store(global).await?;
    if args.count > 1 {
        if message.idempotency_key.is_some() {
            return Err(usage("--count and --idempotency-key exclude each other: copies would be one message".into()));
        }
        let started = std::time::Instant::now();
        let mut left = args.count as usize;
        while left > 0 {
            let batch = left.min(1000);
            store.enqueue_batch(vec![message.clone(); batch]).await.context("enqueueing a batch")?;
            left -= batch;
        }
        let seconds = started.elapsed().as_secs_f64();
        writeln!(std::io::stdout(), "enqueued {} messages in {seconds:.2} s", args.count)?;
        store.close().await;
        return Ok(());
    }
    let enqueued = store.enqueue(message).await.context("enqueueing")?;
    let verb = if enqueued.created { "enqueued" } else { "already enqueued (same idempotency key)" };
    writeln!(std::io::stdout(), "{verb} {} trace {}", enqueued.message.id, enqueued.message.trace_id)?;
    store.close().await;
    Ok(())
}

pub async fn messages(global: &Global, args: MessagesArgs) -> anyhow::Result<()> {
    let status = match args.status.as_deref() {
        None => None,
        Some(s) => Some(
            MessageStatus::parse(s)
                .ok_or_else(|| usage(format!("--status {s:?} is not one of queued, claimed, done, failed")))?,
        ),
    };
    let filter = MessageFilter {
        status,
        tenant: args.tenant,
        service: args.service,
        trace_id: args.trace,
        ..MessageFilter::default()
    };
    let store = open_store(global).await?;
    let page = store.messages(&filter, &PageRequest::first(args.limit)).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for message in &page.items {
            writeln!(out, "{}", serde_json::to_string(message)?)?;
        }
    } else {
        writeln!(
            out,
            "{:<36}  {:<8}  {:<20}  {:<10}  {:>8}  {:<24}",
            "id", "status", "service/role", "intent", "attempts", "created"
        )?;
        for m in &page.items {
            writeln!(
                out,
                "{:<36}  {:<8}  {:<20}  {:<10}  {:>4}/{:<3}  {:<24}",
                m.id,
                m.status.as_str(),
                format!("{}/{}", m.service, m.role),
                m.intent.as_str(),
                m.attempts,
                m.max_attempts,
                m.created_at.format("%Y-%m-%d %H:%M:%S%.3f")
            )?;
        }
    }
    store.close().await;
    Ok(())
}

pub async fn dlq(global: &Global, command: DlqCommand) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List { limit, json } => {
            let filter = MessageFilter { status: Some(MessageStatus::Failed), ..MessageFilter::default() };
            let page = store.dead_letters(&filter, &PageRequest::first(limit)).await?;
            for entry in &page.items {
                if json {
                    writeln!(out, "{}", serde_json::to_string(entry)?)?;
                } else {
                    writeln!(
                        out,
                        "{}  {}/{}  {}  {}  {}",
                        entry.message_id,
                        entry.service,
                        entry.role,
                        entry.reason,
                        entry.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
                        entry.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
            if page.items.is_empty() && !json {
                writeln!(out, "the dead-letter queue is empty")?;
            }
        }
        DlqCommand::Requeue { id } => {
            let id = id.parse().map_err(|_| usage(format!("{id:?} is not a message id (a UUID)")))?;
            let message = store.requeue(id).await?;
            writeln!(out, "requeued {} (attempts reset, status {})", message.id, message.status)?;
        }
    }
    drop(out);
    store.close().await;
    Ok(())
}

pub async fn events(global: &Global, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail { trace, from_start, no_follow } = command;
    if let Some(trace) = &trace
        && !model::trace::is_valid_trace_id(trace)
    {
        return Err(usage(format!("--trace {trace:?} is not a trace id (32 lower-case hex digits)")));
    }
    let store = open_store(global).await?;
    let filter = EventFilter { trace_id: trace, ..EventFilter::default() };
    let cursor = if from_start { None } else { store.latest_event_cursor().await? };
    if no_follow {
        let mut after = cursor;
        loop {
            let page = store.events(&filter, &PageRequest { after: after.clone(), limit: 500 }).await?;
            print_events(&page.items)?;
            if page.items.is_empty() {
                break;
            }
            after = page.next;
        }
    } else {
        let events = store.follow_events(filter, cursor, Duration::from_millis(500));
        tokio::pin!(events);
        loop {
            tokio::select! {
                next = futures_util::StreamExt::next(&mut events) => match next {
                    Some(batch) => print_events(&batch?)?,
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    }
    store.close().await;
    Ok(())
}

fn print_events(events: &[model::event::Event]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for event in events {
        writeln!(out, "{}", serde_json::to_string(event)?)?;
    }
    out.flush()?;
    Ok(())
}

pub async fn agents(global: &Global) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    let mut out = std::io::stdout().lock();
    let agents = store.presence().await?;
    writeln!(out, "{:<40}  {:<8}  {:<20}  {:<16}  {:<20}", "agent", "status", "roles", "host", "last heartbeat")?;
    for a in agents {
        writeln!(
            out,
            "{:<40}  {:<8}  {:<20}  {:<16}  {:<20}",
            a.agent_id,
            a.status.as_str(),
            a.roles.join(","),
            a.host,
            a.last_heartbeat.format("%Y-%m-%d %H:%M:%S")
        )?;
    }
    drop(out);
    store.close().await;
    Ok(())
}

pub async fn trace(global: &Global, trace_id: &str, json: bool) -> anyhow::Result<()> {
    if !model::trace::is_valid_trace_id(trace_id) {
        return Err(usage(format!("{trace_id:?} is not a trace id (32 lower-case hex digits)")));
    }
    let store = open_store(global).await?;
    let filter = EventFilter { trace_id: Some(trace_id.to_owned()), ..EventFilter::default() };
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store.events(&filter, &PageRequest { after: after.clone(), limit: 1000 }).await?;
        if page.items.is_empty() {
            break;
        }
        after = page.next;
        events.extend(page.items);
    }
    let messages = store
        .messages(
            &MessageFilter { trace_id: Some(trace_id.to_owned()), ..MessageFilter::default() },
            &PageRequest::first(1000),
        )
        .await?;
    let goal = store
        .goals(&store::goals::GoalFilter { trace_id: Some(trace_id.to_owned()), limit: 1, ..Default::default() })
        .await?
        .into_iter()
        .next();
    store.close().await;
    // the orchestrator's decisions, interleaved with the events by time
    let decisions = agent::DecisionLog::new(crate::settings::artifacts_for_reading(global)?)
        .read(trace_id)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "decision records not read");
            Vec::new()
        });
    if events.is_empty() && messages.items.is_empty() && decisions.is_empty() {
        return Err(ExitWith(1, format!("error: nothing recorded for trace {trace_id}")).into());
    }
    let mut out = std::io::stdout().lock();
    if json {
        let mut lines: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
        for event in &events {
            lines.push((event.created_at, serde_json::to_string(&serde_json::json!({"event": event}))?));
        }
        for decision in &decisions {
            lines.push((decision.at, serde_json::to_string(&serde_json::json!({"decision": decision}))?));
        }
        lines.sort_by_key(|(at, _)| *at);
        for (_, line) in lines {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "trace {trace_id}: {} message(s), {} event(s), {} decision(s)",
        messages.items.len(),
        events.len(),
        decisions.len()
    )?;
    if let Some(goal) = &goal {
        writeln!(out, "  goal {} {}: {}", goal.id, goal.status, goal.goal)?;
        if let Some(answer) = &goal.answer {
            writeln!(out, "  answer: {answer}")?;
        }
        if let Some(error) = &goal.error {
            writeln!(out, "  error: {error}")?;
        }
    }
    for m in messages.items.iter().rev() {
        writeln!(
            out,
            "  message {} {}/{} {} status {} attempts {}/{}{}",
            m.id,
            m.service,
            m.role,
            m.intent.as_str(),
            m.status.as_str(),
            m.attempts,
            m.max_attempts,
            m.last_error.as_deref().map(|e| format!(" last error: {e}")).unwrap_or_default()
        )?;
    }
    let mut lines: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
    for event in &events {
        let message = event.message_id.map(|id| id.to_string()).unwrap_or_default();
        let reason = event.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        lines.push((event.created_at, format!("{:<28} {message}{reason}", event.event_type)));
    }
    for decision in &decisions {
        lines.push((decision.at, format!("decision {:>3} {}", decision.n, crate::goal_cmd::describe(decision))));
    }
    lines.sort_by_key(|(at, _)| *at);
    let start = lines.first().map(|(at, _)| *at);
    for (at, line) in &lines {
        let offset = start.map(|s| (*at - s).num_microseconds().unwrap_or(0) as f64 / 1000.0).unwrap_or(0.0);
        writeln!(out, "  +{offset:>10.3} ms  {line}")?;
    }
    Ok(())
}
