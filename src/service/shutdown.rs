//! The stop signal every task of `run` waits on.

use tokio::sync::watch;

/// Tells every [`Shutdown`] to stop (once; later calls do nothing more).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A task's view of the stop signal: cheap to clone, one per task.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new stop signal and its first listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Stops every listener.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once the stop was triggered (at once if it already was, or if
    /// the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_listener_stops_even_one_cloned_after_the_trigger() {
        let (trigger, mut first) = channel();
        let mut second = first.clone();
        let waiting = tokio::spawn(async move { second.wait().await });
        let early = tokio::time::timeout(Duration::from_millis(50), first.wait()).await;
        assert!(early.is_err(), "no stop before the trigger");
        trigger.stop();
        first.wait().await;
        waiting.await.unwrap();
        let mut late = first.clone();
        late.wait().await;
    }
}
