//! Clock: monotonic time, wall time and sleeping, per node.
//!
//! Leases and leadership are counted on a node's monotonic clock and never compare wall
//! clocks across nodes (docs/design.md §5). [`SimClock`] gives each simulated node its own offset
//! and drift over the simulator's virtual time, so a drift bound can be tested.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::time::Instant;

/// A node's view of time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since this clock was created.
    fn monotonic(&self) -> Duration;
    /// Wall-clock time in milliseconds since the Unix epoch (for humans and metadata only).
    fn wall_ms(&self) -> u64;
    /// Sleeps for `duration` as measured by this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The executor's clock: real time in production, virtual time under the simulator.
#[derive(Debug)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    #[allow(clippy::disallowed_methods, reason = "this is the real clock behind the seam")]
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    #[allow(clippy::disallowed_methods, reason = "this is the real clock behind the seam")]
    fn wall_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_millis() as u64).unwrap_or(0)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock with its own offset and drift over the executor's (virtual) time.
///
/// `drift_ppm` > 0 runs fast. Jumps move wall time only; monotonic time never goes back.
#[derive(Debug)]
pub struct SimClock {
    origin: Instant,
    state: Mutex<SimClockState>,
}

#[derive(Debug, Clone, Copy)]
struct SimClockState {
    drift_ppm: i64,
    wall_offset_ms: i64,
}

impl SimClock {
    #[allow(clippy::disallowed_methods, reason = "virtual time is the simulated clock's source")]
    pub fn new(drift_ppm: i64, wall_offset_ms: i64) -> Self {
        assert!(drift_ppm.abs() < 1_000_000, "drift must stay below 100%");
        Self { origin: Instant::now(), state: Mutex::new(SimClockState { drift_ppm, wall_offset_ms }) }
    }

    /// Moves the wall clock by `delta_ms` (an NTP step, a bad operator).
    pub fn jump_wall(&self, delta_ms: i64) {
        let mut state = self.state.lock().expect("sim clock lock");
        state.wall_offset_ms += delta_ms;
    }

    fn scale(&self, real: Duration) -> Duration {
        let drift_ppm = self.state.lock().expect("sim clock lock").drift_ppm;
        let nanos = real.as_nanos() as i128;
        Duration::from_nanos((nanos + nanos * drift_ppm as i128 / 1_000_000).max(0) as u64)
    }
}

impl Clock for SimClock {
    fn monotonic(&self) -> Duration {
        self.scale(self.origin.elapsed())
    }

    fn wall_ms(&self) -> u64 {
        let offset_ms = self.state.lock().expect("sim clock lock").wall_offset_ms;
        (self.monotonic().as_millis() as i64 + offset_ms).max(0) as u64
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // A fast clock (drift > 0) finishes a sleep of `duration` early in real time.
        let drift_ppm = self.state.lock().expect("sim clock lock").drift_ppm;
        let nanos = duration.as_nanos() as i128;
        let real = nanos * 1_000_000 / (1_000_000 + drift_ppm as i128);
        Box::pin(tokio::time::sleep(Duration::from_nanos(real.max(0) as u64)))
    }
}
