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
use std::cell::RefCell;
use std::fmt;
use std::io;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
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
        .with_writer(Batching(|| StderrLine))
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

thread_local! {
    /// This thread's lines held inside [`batched`], and where they go.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Lines held by [`batched`].
#[derive(Default)]
struct Held {
    lines: Vec<u8>,
    /// The writer of the first line held: where they all go.
    to: Option<Box<dyn io::Write>>,
}

/// Runs `f`, holding the lines this thread logs meanwhile and writing them
/// at its end (or unwind) in one write, in order. Nested, the outermost
/// writes. For a burst of lines logged in a short loop: held, they stay out
/// of the reader's hands for as long as the loop takes.
pub fn batched<R>(f: impl FnOnce() -> R) -> R {
    /// Writes the held lines when dropped, if it opened the batch.
    struct Release(bool);
    impl Drop for Release {
        fn drop(&mut self) {
            if self.0 {
                write_held();
            }
        }
    }
    let opens = HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.is_none() && {
            *h = Some(Held::default());
            true
        }
    });
    let _release = Release(opens);
    f()
}

/// Writes the lines this thread holds inside [`batched`] now, and holds no
/// more: for a panic hook that ends the process, when nothing unwinds to
/// the batch's end.
pub fn write_held() {
    let held = HELD.with(|h| h.try_borrow_mut().ok().and_then(|mut h| h.take()));
    if let Some(Held {
        lines,
        to: Some(mut to),
    }) = held
    {
        // Nowhere else to report a failed log write.
        let _ = to.write_all(&lines).and_then(|()| to.flush());
    }
}

/// A [`MakeWriter`] whose lines go to its inner writer's, or are held on a
/// thread inside [`batched`].
struct Batching<M>(M);

impl<'a, M> MakeWriter<'a> for Batching<M>
where
    M: MakeWriter<'a>,
    M::Writer: Clone + 'static,
{
    type Writer = Line<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(self.0.make_writer())
    }
}

/// One log line's writer (tracing writes a line in one `write_all`).
struct Line<W>(W);

impl<W: io::Write + Clone + 'static> Line<W> {
    /// Holds `buf` if this thread is inside [`batched`]: false if not.
    fn hold(&self, buf: &[u8]) -> bool {
        HELD.with(|h| match h.borrow_mut().as_mut() {
            Some(held) => {
                held.lines.extend_from_slice(buf);
                held.to.get_or_insert_with(|| Box::new(self.0.clone()));
                true
            }
            None => false,
        })
    }
}

impl<W: io::Write + Clone + 'static> io::Write for Line<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.hold(buf) {
            Ok(buf.len())
        } else {
            self.0.write(buf)
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.hold(buf) {
            Ok(())
        } else {
            self.0.write_all(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Stderr, as a writer that can be copied into [`Held`].
#[derive(Clone, Copy)]
struct StderrLine;

impl io::Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Under stderr's lock throughout: no other thread's line lands
        // inside a batch.
        io::stderr().lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
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

    /// A writer that keeps each write apart, as a system call would be.
    #[derive(Clone, Default)]
    struct Writes(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl io::Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(b).into_owned());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A text subscriber logging through [`Batching`] into the returned writes.
    fn batching_subscriber() -> (Writes, impl Subscriber + Send + Sync) {
        let writes = Writes::default();
        let to = writes.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Batching(move || to.clone()))
            .with_ansi(false)
            .without_time()
            .finish();
        (writes, subscriber)
    }

    #[test]
    fn lines_logged_inside_a_batch_go_out_in_one_write_in_order() {
        let (writes, subscriber) = batching_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(port = 1, "before");
            batched(|| {
                tracing::info!(port = 2, "stream started");
                // Nested: the outer batch writes.
                batched(|| tracing::info!(port = 3, "stream started"));
                assert_eq!(writes.0.lock().unwrap().len(), 1, "held until the end");
                tracing::warn!(port = 4, "stream stalled");
            });
            tracing::info!(port = 5, "after");
            // A panic inside a batch loses none of its lines.
            let unwound = std::panic::catch_unwind(|| {
                batched(|| {
                    tracing::info!(port = 6, "stream started");
                    panic!("in a batch");
                })
            });
            assert!(unwound.is_err());
            tracing::info!(port = 7, "unbatched again");
        });
        let writes = writes.0.lock().unwrap();
        let ports = |w: &String| -> Vec<String> {
            w.lines()
                .map(|l| l.split("port=").nth(1).unwrap().to_string())
                .collect()
        };
        let seen: Vec<Vec<String>> = writes.iter().map(ports).collect();
        assert_eq!(
            seen,
            [
                vec!["1"],
                vec!["2", "3", "4"],
                vec!["5"],
                vec!["6"],
                vec!["7"]
            ],
            "{writes:?}"
        );
    }

    #[test]
    fn a_panic_hook_writes_the_held_lines_at_once() {
        let (writes, subscriber) = batching_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            batched(|| {
                tracing::info!("stream started");
                tracing::error!("panic: …");
                assert!(writes.0.lock().unwrap().is_empty());
                write_held();
                assert_eq!(writes.0.lock().unwrap().len(), 1);
                assert_eq!(writes.0.lock().unwrap()[0].lines().count(), 2);
            });
        });
        assert_eq!(writes.0.lock().unwrap().len(), 1, "nothing written twice");
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
