//! Notebook events and the progress stream: Atelier extensions. Events are stored with the
//! change they describe and numbered per notebook, so `GET …/progress` can resume after any
//! event (`Last-Event-ID`), even across a server restart, without a gap or a duplicate.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use atelier_domain::{NotebookEvent, NotebookId};
use atelier_wire::{ErrorBody, NotebookEventList};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Caller;
use crate::render;
use crate::routes::notebook::parse_notebook_id;
use crate::state::AppState;

/// Events read from the store per query.
const BATCH: i64 = 500;

/// What happened to a notebook, oldest first (an Atelier extension).
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/events", tag = "events (Atelier extension)",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("after" = Option<i64>, Query, minimum = 0, description = "only events numbered above this"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000)),
    responses((status = 200, body = NotebookEventList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_notebook_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
) -> Result<Json<NotebookEventList>, ApiError> {
    let id = parse_notebook_id(&id)?;
    state.service.get(&caller.project_id, &id)?;
    let after = query.int("after")?.unwrap_or(0);
    let limit = query.int("limit")?.unwrap_or(1000);
    if after < 0 {
        return Err(ApiError::BadValue("after".to_owned()));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadValue("limit".to_owned()));
    }
    let events: Vec<_> = state
        .service
        .store()
        .list_events(&id, after, limit)
        .await?
        .iter()
        .map(render::event)
        .collect();
    Ok(Json(NotebookEventList {
        total: events.len() as i64,
        events,
    }))
}

/// The progress of the notebook's current (or last) operation as Server-Sent Events (an
/// Atelier extension). Each event is `id: N`, `event: step|status`, `data:` a
/// `NotebookEventResp`. Without `Last-Event-ID` the stream replays the latest operation from
/// its first event; with it, everything after event N. It ends after the event an operation
/// ends in (RUNNING, STOPPED, a failure, …) with `event: end`.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/progress", tag = "events (Atelier extension)",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event"),
        ("last_event_id" = Option<i64>, Query, description = "the same, for clients that cannot set headers")),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 404, body = ErrorBody)))]
pub async fn show_notebook_progress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    query: ApiQuery,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let id = parse_notebook_id(&id)?;
    let notebook = state.service.get(&caller.project_id, &id)?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadValue("Last-Event-ID".to_owned()))?,
        ),
        None => query.int("last_event_id")?,
    };
    // Subscribe before reading the backlog: nothing committed in between is missed.
    let live = state.service.subscribe();
    let after = match resume {
        Some(n) => n,
        None => {
            let recent = state
                .service
                .store()
                .list_events(&id, (notebook.event_seq - BATCH).max(0), BATCH)
                .await?;
            recent
                .iter()
                .rev()
                .find(|e| e.begins_operation())
                .map_or(0, |e| e.seq - 1)
        }
    };
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(stream_progress(state, id, after, live, sender));
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default()))
}

type Sender = mpsc::Sender<Result<Event, Infallible>>;

fn frame(event: &NotebookEvent) -> Event {
    let data = serde_json::to_string(&render::event(event)).unwrap_or_default();
    Event::default()
        .id(event.seq.to_string())
        .event(if event.step.is_some() {
            "step"
        } else {
            "status"
        })
        .data(data)
}

async fn end(sender: &Sender, status: &str) {
    let data = serde_json::json!({ "status": status }).to_string();
    let _ = sender
        .send(Ok(Event::default().event("end").data(data)))
        .await;
}

/// Sends every event after `sent`, from the store and then live, until the operation ends,
/// the client goes away or the server shuts down.
async fn stream_progress(
    state: AppState,
    id: NotebookId,
    mut sent: i64,
    mut live: tokio::sync::broadcast::Receiver<Arc<NotebookEvent>>,
    sender: Sender,
) {
    let shutdown = state.shutdown.clone();
    let mut catch_up = true;
    loop {
        if catch_up {
            catch_up = false;
            loop {
                let batch = match state.service.store().list_events(&id, sent, BATCH).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::warn!(notebook_id = %id, %error, "progress stream: cannot read events");
                        return;
                    }
                };
                let full = batch.len() as i64 == BATCH;
                for event in &batch {
                    if sender.send(Ok(frame(event))).await.is_err() {
                        return;
                    }
                    sent = event.seq;
                }
                if !full {
                    break;
                }
            }
            // Caught up: if nothing is in progress, the stream is over.
            match state.service.get_any(&id) {
                None => {
                    end(&sender, "DELETED").await;
                    return;
                }
                Some(notebook)
                    if !notebook.status.is_transitional() && notebook.event_seq <= sent =>
                {
                    end(&sender, notebook.status.as_str()).await;
                    return;
                }
                Some(_) => {}
            }
        }
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                // Belt and braces: look at the store now and then.
                catch_up = true;
                continue;
            }
            received = live.recv() => received,
        };
        match event {
            Ok(event) if event.notebook_id == id => {
                if event.seq <= sent {
                    continue;
                }
                if event.seq > sent + 1 {
                    // Something was missed (or is not stored, like the final `Deleted`):
                    // read the store first.
                    catch_up = true;
                    if event.status != atelier_domain::NotebookStatus::Deleted {
                        continue;
                    }
                }
                if sender.send(Ok(frame(&event))).await.is_err() {
                    return;
                }
                sent = event.seq;
                if event.is_terminal() {
                    end(&sender, event.status.as_str()).await;
                    return;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => catch_up = true,
            Err(RecvError::Closed) => return,
        }
    }
}
