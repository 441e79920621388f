//! Logs through `tracing` to stderr, as text or JSON (`[log]`); the level can be
//! changed by a configuration reload.

use crate::config::{Log, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

/// Installs the global subscriber.
pub fn init(config: &Log) -> LogHandle {
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&config.level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match config.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // A subscriber already installed (tests) keeps logging where it was.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    LogHandle(handle)
}

impl LogHandle {
    /// Applies a new `[log] level`.
    pub fn set_level(&self, level: &str) {
        let _ = self.0.reload(EnvFilter::new(level));
    }
}
