//! The control plane: one HTTP listener for the reservations API, `/metrics`,
//! `/healthz` and `/readyz` (docs/api.md), over the [`coordinator`] that keeps
//! the schedule, the journal and the data plane consistent.
//!
//! - [`coordinator`]: the one writer, under a lock;
//! - [`published`]: what every reader uses instead, swapped in after each change;
//! - `api`, [`body`], [`view`], [`error`]: the routes, what they read, their
//!   JSON, their errors;
//! - [`exporter`]: the Prometheus exposition;
//! - [`serve`]: the connections: timeouts, a cap, file descriptors set aside.

mod api;
pub mod body;
pub mod coordinator;
pub mod error;
pub mod exporter;
pub mod published;
pub mod sdp;
pub mod serve;
pub mod view;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use coordinator::Coordinator;
use published::{Published, Reader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

pub use body::MAX_BODY_BYTES;

/// What every handler shares.
pub struct Shared {
    /// Reservations, journal and sockets: mutations only, on blocking threads.
    pub coordinator: Mutex<Coordinator>,
    /// The latest published copy, for every reader.
    pub reader: Reader,
    /// Bearer token for mutating routes, if configured (replaced on reload).
    pub token: RwLock<Option<String>>,
    /// The Prometheus exporter.
    pub exporter: exporter::Exporter,
    /// `[sdp]`: the audio parameters of every SDP (replaced on reload).
    pub sdp: RwLock<crate::config::Sdp>,
    /// The current error writing a reservation's files into `[wowza]
    /// sdp_dir`, by event id (kept by the task that writes them).
    pub sdp_file_errors: Mutex<HashMap<String, String>>,
}

impl Shared {
    /// Shares `coordinator` with the handlers.
    pub fn new(
        coordinator: Coordinator,
        token: Option<String>,
        exporter: exporter::Exporter,
        sdp: crate::config::Sdp,
    ) -> Self {
        Shared {
            reader: coordinator.reader(),
            coordinator: Mutex::new(coordinator),
            token: RwLock::new(token),
            exporter,
            sdp: RwLock::new(sdp),
            sdp_file_errors: Mutex::default(),
        }
    }

    /// `[sdp]` in force.
    pub fn sdp_defaults(&self) -> crate::config::Sdp {
        self.sdp
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current error writing `event_id`'s SDP files, if any.
    pub fn sdp_file_error(&self, event_id: &str) -> Option<String> {
        self.sdp_file_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(event_id)
            .cloned()
    }

    /// Locks the coordinator (a mutation; may wait on `fsync` and binds: never
    /// from an async task). A panic elsewhere never leaves it unusable: the
    /// state behind the lock is only changed after the journal write succeeded.
    pub fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest published copy (never waits on the lock).
    pub fn published(&self) -> Arc<Published> {
        self.reader.load()
    }
}

/// The router with every route of docs/api.md.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/reservations", get(api::list).post(api::create))
        .route(
            "/v1/reservations/{event_id}",
            get(api::show).patch(api::change).delete(api::delete),
        )
        .route("/v1/reservations/{event_id}/sdp", get(api::sdp))
        .route("/v1/groups/{group}", get(api::group))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(api::no_route)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_requests,
        ))
        .with_state(shared)
}

/// Counts every request by method, route template and status. Every label
/// comes from a closed set, so that no client (token or not) can add series:
/// see [`method_label`]; a route is a template of the router or `unmatched`;
/// a status is one this server sent.
async fn count_requests(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(req).await;
    shared
        .exporter
        .count_request(method, &route, response.status().as_u16());
    response
}

/// The `method` label of a request: the HTTP standard methods by name, any
/// other (an extension method is any token a client likes) `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for m in ["CONNECT", "TRACE", "PROPFIND", "X1234", "get"] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
