//! Request bodies: read up to [`MAX_BODY_BYTES`], parsed as one JSON object
//! whose errors name the offending field. What every client can send goes
//! through here, so it is fuzzed (tests/fuzz.rs).

use super::error::ApiError;
use super::serve::BODY_TIMEOUT;
use axum::body::{Body, Bytes};
use serde::de::DeserializeOwned;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a body, refusing one over [`MAX_BODY_BYTES`] or not sent within
/// [`BODY_TIMEOUT`] (a slow client holds a connection no longer).
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| ApiError::timeout(BODY_TIMEOUT))?
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))
}

/// Parses a JSON body; the message names the offending field.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let hint = match (inner.classify(), field.as_str()) {
            (_, "start" | "end") => "; write times as RFC 3339, e.g. 2026-11-24T10:00:00Z",
            (serde_json::error::Category::Data, _) => "",
            _ => "; send one JSON object",
        };
        let field = if field == "." {
            String::new()
        } else {
            format!("{field}: ")
        };
        ApiError::invalid(format!("invalid JSON body: {field}{inner}{hint}"))
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}; send one JSON object")))?;
    Ok(value)
}
