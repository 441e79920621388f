//! The keeper of `[wowza] sdp_dir` (docs/configuration.md): once a second it
//! makes the folder hold every bound reservation's ready SDP files
//! ([`crate::control::sdp::wanted`], from the published copy, never the
//! coordinator's lock) and nothing else of the relay's. Writes run on a
//! blocking thread (they are fsynced); errors are logged once per
//! reservation, shown in its view, and never stop anything.

use super::shutdown::Shutdown;
use crate::clock::Now;
use crate::control::Shared;
use crate::sdp::files::SdpDir;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Runs until `stop`; first removes the files of reservations that no longer
/// exist (freed while the relay was down).
pub async fn run(shared: Arc<Shared>, dir: PathBuf, mut stop: Shutdown) {
    let mut folder = SdpDir::new(dir);
    let published = shared.published();
    folder = blocking(move || {
        for name in folder.clean(&|id| published.get(id).is_some()) {
            info!(file = %name, "removed the SDP file of a reservation that is gone");
        }
        folder
    })
    .await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
        let wanted =
            crate::control::sdp::wanted(&shared.published(), &shared.sdp_defaults(), &Now::read());
        let (f, synced) = blocking(move || {
            let synced = folder.sync(&wanted);
            (folder, synced)
        })
        .await;
        folder = f;
        for name in &synced.written {
            info!(file = %folder.dir().join(name).display(), "SDP written");
        }
        for name in &synced.removed {
            info!(file = %name, "SDP removed: its group was freed");
        }
        for (event_id, error) in &synced.new_errors {
            warn!(event_id, %error, "cannot keep the SDP file; forwarding goes on, the relay tries again");
        }
        *shared
            .sdp_file_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = folder.errors().clone();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
