//! The steady mixed load: each class on its own clock at a fixed rate, each request in its own
//! task (a slow answer does not slow the schedule), at most [`IN_FLIGHT`] at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::calls::{Context, REQUEST_TIMEOUT};
use super::record::Class;

/// Requests in flight at most; a tick that finds none free is skipped and counted.
const IN_FLIGHT: u32 = 512;

/// Each class's share of `--rate`, in percent of the requests; each order is followed by its
/// two payment requests (the other 20 %), which have no clock of their own.
fn share_percent(class: Class) -> u32 {
    match class {
        Class::Product => 30,
        Class::Order => 10,
        Class::Payment => 0,
        Class::Purchase => 20,
        Class::Track => 10,
        Class::Login => 10,
    }
}

/// The interval between two requests of `class` at `rate` requests per second in all, or
/// `None` for a class that is not scheduled on its own.
pub fn period(class: Class, rate: u32) -> Option<Duration> {
    let per_sec = f64::from(rate) * f64::from(share_percent(class)) / 100.0;
    (per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / per_sec))
}

/// The running load.
#[derive(Debug)]
pub struct Traffic {
    stop: watch::Sender<bool>,
    clocks: Vec<JoinHandle<()>>,
    slots: Arc<Semaphore>,
    skipped: Arc<AtomicU64>,
}

impl Traffic {
    /// Starts every class's clock.
    pub fn start(ctx: Arc<Context>, rate: u32) -> Self {
        let (stop, stopped) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
        let skipped = Arc::new(AtomicU64::new(0));
        let clocks = Class::ALL
            .into_iter()
            .enumerate()
            .filter_map(|(i, class)| Some((i, class, period(class, rate)?)))
            .map(|(i, class, every)| {
                let (ctx, slots, skipped, stopped) =
                    (Arc::clone(&ctx), Arc::clone(&slots), Arc::clone(&skipped), stopped.clone());
                // Each clock starts a different fraction of its period late, so the classes do
                // not all send on the same instant (a fault would then always meet a burst).
                let first = tokio::time::Instant::now() + every.mul_f64(i as f64 / Class::ALL.len() as f64);
                tokio::spawn(clock(class, first, every, ctx, slots, skipped, stopped))
            })
            .collect();
        Self { stop, clocks, slots, skipped }
    }

    /// Stops the clocks and waits for the requests in flight (each ends within its timeout).
    /// Returns how many ticks were skipped because [`IN_FLIGHT`] requests were waiting.
    pub async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        for clock in self.clocks {
            let _ = clock.await;
        }
        // Every request holds a slot until it is recorded.
        let drained = self.slots.acquire_many(IN_FLIGHT);
        if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), drained).await.is_err() {
            eprintln!("drill: some requests were still in flight after their timeout");
        }
        self.skipped.load(Ordering::Relaxed)
    }
}

async fn clock(
    class: Class,
    first: tokio::time::Instant,
    every: Duration,
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    skipped: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        seq += 1;
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    ctx.run(class, seq).await;
                    drop(slot);
                });
            }
            Err(_) => {
                skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_add_up_to_the_rate_with_payments_following_orders() {
        let ticks: u32 = Class::ALL.into_iter().map(share_percent).sum();
        // Each order brings two payment requests.
        assert_eq!(ticks + 2 * share_percent(Class::Order), 100);
        assert_eq!(period(Class::Product, 20), Some(Duration::from_secs_f64(1.0 / 6.0)));
        assert_eq!(period(Class::Payment, 20), None);
    }
}
