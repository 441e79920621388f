//! The control plane (SPEC §6): one HTTP listener for the reservations API,
//! `/metrics`, `/healthz` and `/readyz`.

mod api;
pub mod error;
pub mod exporter;
pub mod metrics;
pub mod view;

use crate::relay::Relay;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
pub struct Shared {
    /// Reservations, journal and sockets.
    pub relay: Mutex<Relay>,
    /// Bearer token for mutating routes, if configured (replaced on reload).
    pub token: RwLock<Option<String>>,
    /// The exporter.
    pub metrics: metrics::Metrics,
}

impl Shared {
    /// Locks the relay. A panic elsewhere never leaves it unusable: the state
    /// behind the lock is only changed after the journal write succeeded.
    pub fn relay(&self) -> MutexGuard<'_, Relay> {
        self.relay.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The router with every route of SPEC §6.
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

/// Counts every request by method, route template and status.
async fn count_requests(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(req).await;
    shared
        .metrics
        .count_request(&method, &route, response.status().as_u16());
    response
}
