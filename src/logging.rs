//! Logs through `tracing` to stderr, as text or JSON (`[log]`); the level can be
//! changed by a configuration reload.
//!
//! In text, every field is `name=value` with the value quoted when it holds a
//! space, a quote or an `=` (an error, a reason, a path), whether it was
//! recorded as a string or for display: a line splits into its fields the
//! same way whatever they hold.
//!
//! When stderr is systemd's journal stream (`JOURNAL_STREAM` names it), the
//! text lines leave out their own timestamp, which the journal adds, and
//! begin with a `<N>` syslog priority, which the journal reads as the line's
//! priority (`journalctl -p warning`; docs/install.md). JSON lines stay as
//! they are: a collector reading them wants their own fields.

use crate::config::{Log, LogFormat};
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    let fmt = match (config.format, stderr_is_journal()) {
        (LogFormat::Json, _) => fmt.json().boxed(),
        (LogFormat::Text, false) => fmt.fmt_fields(text_fields()).boxed(),
        (LogFormat::Text, true) => fmt
            .fmt_fields(text_fields())
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .boxed(),
    };
    // A subscriber already installed (tests) keeps logging where it was.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    LogHandle(handle)
}

/// The text format's fields: `name=value`, the value quoted (and its quotes
/// escaped) when it would not read as one token.
fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut Writer, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            if field.name() == "message" {
                return write!(w, "{value:?}");
            }
            let text = format!("{value:?}");
            let plain = text.starts_with('"')
                || !text.contains(|c: char| c.is_whitespace() || c == '"' || c == '=');
            if plain {
                write!(w, "{}={text}", field.name())
            } else {
                write!(w, "{}={text:?}", field.name())
            }
        },
    )
    .delimited(" ")
}

impl LogHandle {
    /// Applies a new `[log] level`.
    pub fn set_level(&self, level: &str) {
        let _ = self.0.reload(EnvFilter::new(level));
    }
}

/// Whether stderr is the journal stream systemd connected (not merely
/// inherited `JOURNAL_STREAM` by a process whose stderr was redirected
/// since): its `device:inode` is stderr's, as `systemd.exec(5)` advises.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    parse_stream(&stream.to_string_lossy()) == Some((stat.st_dev, stat.st_ino))
}

/// `JOURNAL_STREAM`'s `device:inode`, both decimal.
fn parse_stream(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority the journal reads from a line's `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text line with its syslog priority in front, for the journal.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_is_device_and_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("8:x"), None);
        assert_eq!(parse_stream(""), None);
    }

    #[test]
    fn warnings_and_errors_keep_their_priority_in_the_journal() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn text_fields_are_quoted_when_they_hold_spaces_however_recorded() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(text_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let why = "fast_path = \"off\"";
            tracing::info!(path = "userspace", reason = %why, port = 65528, ssrc = 170, "data path chosen");
        });
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                r#"data path chosen path="userspace" reason="fast_path = \"off\"" port=65528 ssrc=170"#
            ),
            "{line}"
        );
    }
}
