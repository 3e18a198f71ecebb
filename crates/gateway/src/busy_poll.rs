//! Busy polling: for a short window after HTTP traffic the gateway's event loop keeps polling
//! its sockets instead of sleeping in `epoll_wait`.
//!
//! A request through the gateway costs two extra wake-ups (the request arriving, the answer
//! coming back from JupyterLab), and on a virtual machine a wake-up from sleep costs tens of
//! microseconds: more than the rest of the gateway's work. While the window is open the loop
//! yields the CPU to any other runnable thread between polls, so a notebook on the same CPU
//! loses nothing, and it stops at once when the machine has more runnable threads than CPUs
//! for [`SUSTAIN`] (the CPU is wanted elsewhere), staying off for [`COOLDOWN`].
//!
//! Only the gateway's own single-threaded runtime can poll this way (it owns the I/O driver
//! the loop polls), so [`BusyPoll::run`] belongs on that runtime; elsewhere it is inert.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

/// How long oversubscription must last before the loop gives up its window.
pub const SUSTAIN: Duration = Duration::from_micros(100);
/// How long the loop stays asleep after giving up because of oversubscription.
pub const COOLDOWN: Duration = Duration::from_millis(20);

/// Whether more threads want to run than there are CPUs; `None` when that cannot be told.
pub type Probe = Box<dyn Fn() -> Option<bool> + Send + Sync>;

pub struct BusyPoll {
    /// The window in nanoseconds; 0 = off.
    window_ns: u64,
    epoch: Instant,
    /// Nanoseconds since `epoch` at which the current window closes.
    until_ns: AtomicU64,
    wake: Notify,
    spun_ns: AtomicU64,
    probe: Probe,
}

impl BusyPoll {
    /// A window of `window` after each activity; zero turns busy polling off.
    pub fn new(window: Duration) -> Arc<BusyPoll> {
        if window.is_zero() {
            return BusyPoll::off();
        }
        BusyPoll::with_probe(window, loadavg_probe())
    }

    pub fn with_probe(window: Duration, probe: Probe) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            until_ns: AtomicU64::new(0),
            wake: Notify::new(),
            spun_ns: AtomicU64::new(0),
            probe,
        })
    }

    /// Busy polling turned off.
    pub fn off() -> Arc<BusyPoll> {
        BusyPoll::with_probe(Duration::ZERO, Box::new(|| None))
    }

    /// Whether a window is configured (the gateway then needs its own thread).
    pub fn enabled(&self) -> bool {
        self.window_ns != 0
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Opens (or extends) the window: a request went out, or its answer came back.
    pub fn activity(&self) {
        if self.window_ns == 0 {
            return;
        }
        self.until_ns.store(
            self.now_ns().saturating_add(self.window_ns),
            Ordering::Relaxed,
        );
        self.wake.notify_one();
    }

    /// Time spent in polling windows instead of sleeping: wall clock, including what was yielded
    /// to other threads and the gateway's own work meanwhile, so an upper bound on the CPU used.
    pub fn spun(&self) -> Duration {
        Duration::from_nanos(self.spun_ns.load(Ordering::Relaxed))
    }

    /// Polls while a window is open; runs until the runtime stops.
    pub async fn run(self: Arc<Self>) {
        if self.window_ns == 0 {
            return;
        }
        if (self.probe)().is_none() {
            tracing::debug!("cannot tell the machine's load: gateway busy polling is off");
            return;
        }
        let sustain = u64::try_from(SUSTAIN.as_nanos()).unwrap_or(u64::MAX);
        loop {
            self.wake.notified().await;
            let mut now = self.now_ns();
            let mut oversubscribed_since = None;
            let mut gave_up = false;
            while now < self.until_ns.load(Ordering::Relaxed) {
                match (self.probe)() {
                    Some(false) => oversubscribed_since = None,
                    Some(true) => {
                        let since = *oversubscribed_since.get_or_insert(now);
                        if now - since >= sustain {
                            gave_up = true;
                            break;
                        }
                    }
                    None => {
                        gave_up = true;
                        break;
                    }
                }
                // Any other thread runnable on this CPU goes first...
                std::thread::yield_now();
                // ...then the runtime polls its sockets without sleeping and runs what is ready.
                tokio::task::yield_now().await;
                let before = now;
                now = self.now_ns();
                self.spun_ns.fetch_add(now - before, Ordering::Relaxed);
            }
            if gave_up {
                tokio::time::sleep(COOLDOWN).await;
            }
        }
    }
}

/// Reads the number of runnable threads from `/proc/loadavg` (its fourth field, `R/T`) and
/// compares it with the CPUs this process may use.
fn loadavg_probe() -> Probe {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let file = std::fs::File::open("/proc/loadavg").ok();
    Box::new(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let read = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        let runnable = runnable_threads(std::str::from_utf8(&buf[..read]).ok()?)?;
        Some(runnable > cpus)
    })
}

/// The runnable-thread count in a `/proc/loadavg` line: `0.52 0.58 0.59 3/467 12345`.
fn runnable_threads(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .0
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn reads_runnable_threads() {
        assert_eq!(runnable_threads("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(runnable_threads("1.00 2.00 3.00 17/80 1"), Some(17));
        assert_eq!(runnable_threads("0.52 0.58 0.59"), None);
        assert_eq!(runnable_threads("a b c x/y z"), None);
        assert!(
            loadavg_probe()().is_some(),
            "this Linux machine has /proc/loadavg"
        );
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn polls_for_the_window_after_activity_then_sleeps() {
        runtime().block_on(async {
            let poll = BusyPoll::with_probe(Duration::from_millis(30), Box::new(|| Some(false)));
            tokio::spawn(poll.clone().run());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(poll.spun(), Duration::ZERO, "no activity, no polling");
            poll.activity();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let spun = poll.spun();
            assert!(
                spun >= Duration::from_millis(25) && spun < Duration::from_millis(100),
                "polled {spun:?} for a 30 ms window"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(poll.spun(), spun, "polling stopped when the window closed");
        });
    }

    #[test]
    fn sockets_are_served_while_polling() {
        runtime().block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let poll = BusyPoll::with_probe(Duration::from_millis(50), Box::new(|| Some(false)));
            tokio::spawn(poll.clone().run());
            poll.activity();
            let (mut a, mut b) = tokio::net::UnixStream::pair().expect("pair");
            let echo = tokio::spawn(async move {
                for _ in 0..100 {
                    let mut buf = [0u8; 4];
                    b.read_exact(&mut buf).await.expect("read");
                    b.write_all(&buf).await.expect("write");
                }
            });
            for _ in 0..100 {
                a.write_all(b"ping").await.expect("write");
                let mut buf = [0u8; 4];
                a.read_exact(&mut buf).await.expect("read");
                assert_eq!(&buf, b"ping");
            }
            echo.await.expect("echo");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                poll.spun() >= Duration::from_millis(40),
                "the exchange ran while the loop polled"
            );
        });
    }

    #[test]
    fn gives_up_when_the_machine_is_oversubscribed() {
        runtime().block_on(async {
            let busy = Arc::new(AtomicBool::new(true));
            let probe = {
                let busy = busy.clone();
                Box::new(move || Some(busy.load(Ordering::Relaxed)))
            };
            let poll = BusyPoll::with_probe(Duration::from_secs(10), probe);
            tokio::spawn(poll.clone().run());
            poll.activity();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let spun = poll.spun();
            assert!(
                spun > Duration::ZERO && spun < Duration::from_millis(100),
                "gave up a 10 s window after {spun:?} of oversubscription"
            );
            // Past the cooldown, new activity opens a window again.
            busy.store(false, Ordering::Relaxed);
            poll.activity();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(poll.spun() >= spun + Duration::from_millis(50));
        });
    }

    #[test]
    fn off_never_polls() {
        runtime().block_on(async {
            let poll = BusyPoll::off();
            let task = tokio::spawn(poll.clone().run());
            poll.activity();
            task.await.expect("returns at once");
            assert_eq!(poll.spun(), Duration::ZERO);
        });
    }
}
