//! Route handlers. Mutations run on the blocking pool, under the
//! coordinator's lock: they wait for `fsync`. Reads use the published copy.

use super::body::{parse, read};
use super::coordinator::{Coordinator, Created};
use super::error::ApiError;
use super::published::Published;
use super::{Shared, sdp, view};
use crate::clock::Now;
use crate::group::{GroupId, Role};
use crate::reservation::{Change, Reservation};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

type Result<T> = std::result::Result<T, ApiError>;

pub async fn list(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let published = shared.published();
    let now = Now::read();
    let views: Vec<_> = published
        .entries()
        .map(|e| with_sdp_error(&shared, view::reservation(&published, e, false, &now)))
        .collect();
    Json(json!({ "reservations": views }))
}

pub async fn show(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response> {
    let view = view_of(&shared.published(), &id, &Now::read())?;
    Ok(Json(with_sdp_error(&shared, view)).into_response())
}

pub async fn group(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
) -> Result<Response> {
    let group: GroupId = group
        .parse::<u32>()
        .map_err(|_| ApiError::invalid(format!("group {group:?} is not a number: use 0–8063")))
        .and_then(|n| GroupId::try_from(n).map_err(|e| ApiError::invalid(e.to_string())))?;
    let published = shared.published();
    let now = Now::read();
    let entry = published
        .occupant(group, now.wall)
        .ok_or_else(|| ApiError::not_found(format!("no reservation occupies group {group} now")))?;
    let view = view::reservation(&published, entry, false, &now);
    Ok(Json(with_sdp_error(&shared, view)).into_response())
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&shared, &headers)?;
    let request: Reservation = parse(&read(body).await?)?;
    let id = request.event_id.clone();
    blocking(shared, move |coordinator| {
        let now = Now::read();
        let created = coordinator.create(request, &now)?;
        let status = match created {
            Created::New => StatusCode::CREATED,
            Created::Existing => StatusCode::OK,
        };
        let location = [(header::LOCATION, format!("/v1/reservations/{id}"))];
        let view = view_of(&coordinator.published(), &id, &now)?;
        Ok((status, location, Json(view)).into_response())
    })
    .await
}

pub async fn change(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&shared, &headers)?;
    let change: Change = parse(&read(body).await?)?;
    if change.end.is_none() && change.source.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give \"end\" and/or \"source\"",
        ));
    }
    blocking(shared, move |coordinator| {
        let now = Now::read();
        coordinator.change(&id, &change, &now)?;
        let published = coordinator.published();
        match published.get(&id) {
            Some(e) => Ok(Json(view::reservation(&published, e, false, &now)).into_response()),
            // An end moved into the past freed the group at once.
            None => Ok(Json(json!({ "event_id": id, "state": "ended" })).into_response()),
        }
    })
    .await
}

pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&shared, &headers)?;
    blocking(shared, move |coordinator| {
        let now = Now::read();
        let entry = coordinator.delete(&id, &now)?;
        let view = view::reservation(&coordinator.published(), &entry, true, &now);
        Ok(Json(view).into_response())
    })
    .await
}

/// `?video=ROLE` of the SDP route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdpQuery {
    video: Option<String>,
}

pub async fn sdp(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    query: std::result::Result<Query<SdpQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(format!(
            "{}; the one parameter is video=ROLE",
            e.body_text()
        ))
    })?;
    let video = match query.video.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<Role>()
                .map_err(|e| ApiError::invalid(format!("video: {e}")))?,
        ),
    };
    let published = shared.published();
    let entry = published
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no reservation with event_id {id:?}")))?;
    match sdp::describe(
        &published,
        entry,
        video,
        &shared.sdp_defaults(),
        &Now::read(),
    ) {
        Ok(text) => Ok(([(header::CONTENT_TYPE, "application/sdp")], text).into_response()),
        Err(sdp::SdpError::NoSuchVideo(why)) => Err(ApiError::not_found(why)),
        Err(sdp::SdpError::NotReady(why)) => Err(ApiError::not_ready(format!(
            "the SDP of {id:?} is not ready: {why}; it is once the appliance's packets carry it (an H.264 encoder sends its SPS and PPS with every keyframe)"
        ))),
    }
}

/// A view with its reservation's current `sdp_dir` error, if any.
fn with_sdp_error(shared: &Shared, mut view: view::ReservationView) -> view::ReservationView {
    view.sdp_file_error = shared.sdp_file_error(&view.event_id);
    view
}

pub async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let text = shared
        .exporter
        .render(&shared.published(), &Now::read())
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let published = shared.published();
    match published.waiting(Now::read().wall) {
        Some(waiting) if waiting.is_empty() => match published.role() {
            Some(role) => Json(json!({ "ready": true, "role": role.as_str() })).into_response(),
            None => Json(json!({ "ready": true })).into_response(),
        },
        Some(waiting) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "open windows not bound yet", "waiting": waiting })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": if published.role().is_some() {
                "the cluster's state not read from etcd yet"
            } else {
                "state not loaded yet"
            } })),
        )
            .into_response(),
    }
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}; see docs/api.md", uri.path()))
}

fn view_of(published: &Published, id: &str, now: &Now) -> Result<view::ReservationView> {
    let entry = published
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no reservation with event_id {id:?}")))?;
    Ok(view::reservation(published, entry, false, now))
}

/// Mutating routes need the bearer token when one is configured.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<()> {
    let token = shared
        .token
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(token) = token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq::constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Runs a mutation on the blocking pool, under the coordinator's lock.
async fn blocking<F>(shared: Arc<Shared>, f: F) -> Result<Response>
where
    F: FnOnce(&mut Coordinator) -> Result<Response> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&mut shared.coordinator()))
        .await
        .map_err(|e| ApiError::internal(format!("request handler failed: {e}")))?
}
