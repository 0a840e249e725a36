//! A sliding window of one pool's requests, errors and latencies, recorded with atomics only.
//!
//! # Layout
//!
//! A [`PoolWindow`] is a ring of `n` buckets, each `bucket` wide (default 10 buckets of 1 s). The
//! bucket for time `t` (ms on the windows' clock, [`clock_ms`]) is epoch `t / bucket`, kept in slot
//! `epoch % n`. A bucket holds its epoch, a request count, an error count and a latency
//! histogram. [`PoolWindow::snapshot`] at epoch `E` merges the slots whose epoch lies in
//! `E-n+1 ..= E`: the current, partly filled bucket and the `n-1` before it, so the figures cover
//! between `(n-1)·bucket` and `n·bucket` of history (9 to 10 s by default).
//!
//! # Latency histogram and its error
//!
//! Latencies are counted in microseconds in a fixed log-linear histogram: values below 16 µs get a
//! bin each; above, every power of two is split into 16 equal bins (so a bin is at most 1/16 of its
//! lower bound wide). A quantile is reported as the midpoint of the bin holding the rank
//! (nearest-rank definition), so it is within **1/32 ≈ 3.1 % (or 1 µs)** of a latency that was
//! really recorded at that rank. Latencies of 268 s (2^28 µs) and more count as 268 s. The
//! histogram has 400 bins of `u32`: 1.6 KB per bucket, 16 KB per pool at the default size.
//!
//! # Recording, and the race at a bucket turn
//!
//! [`PoolWindow::record`] takes the caller's clock reading, finds the slot and adds to three counters with relaxed
//! atomic adds: no lock, no allocation. The first writer of a new epoch finds the slot holding an
//! older epoch and must clear it. It claims the slot with a compare-and-swap of the slot's epoch
//! from the old value to `RESETTING`, zeroes the counters, then publishes the new epoch (release).
//! Writers of the same epoch that arrive meanwhile see `RESETTING` and spin (with `yield_now`
//! after a few rounds) until the new epoch is published, then add: the zeroing takes well under a
//! microsecond, happens once per bucket, and only writers racing the turn ever wait. So no event
//! of a current epoch is lost, whatever the interleaving.
//!
//! A writer whose epoch is older than the slot's (it read the clock, then was delayed by `n`
//! buckets or more) drops its event: it would already be out of the window. A writer delayed by
//! `n-1` buckets between checking the epoch and adding can race the reset itself: its one event is
//! then lost or counted in the newest bucket. Both need a thread stalled for about 9 s at the
//! default size.
//!
//! # What a racing reader sees
//!
//! [`PoolWindow::snapshot`] reads each slot seqlock-style: the epoch, the counters, then the epoch
//! again; a slot whose epoch changed meanwhile (being reset for a newer epoch) is skipped, which
//! only ends its old data's life a moment early. Counters of a slot still being written are read
//! one by one while writers add, so the figures may leave out events in flight and may be
//! mutually off by those few events (errors are clamped to requests; quantiles use the
//! histogram's own total). Every figure is some recent value; none is ever torn.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Values below `SUB` µs get one bin each; each power of two above is split into `SUB` bins.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Latencies are clamped to `2^MAX_BITS - 1` µs (about 268 s).
const MAX_BITS: u32 = 28;
const MAX_MICROS: u64 = (1 << MAX_BITS) - 1;
/// Bins of the histogram: the exact ones, then `SUB` per power of two up to `MAX_BITS`.
pub const BINS: usize = (MAX_BITS - SUB_BITS + 1) as usize * SUB;
/// The largest relative error of a reported quantile (half a bin over the bin's lower bound).
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / (2 * SUB) as f64;

/// The epoch of a slot being cleared by the writer that claimed it.
const RESETTING: u64 = u64::MAX;
/// Spins before a writer waiting on a reset starts yielding its thread.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Bounds of a window's shape (a bucket's `u32` bins cannot overflow below 60 s).
const MIN_BUCKET: Duration = Duration::from_millis(10);
const MAX_BUCKET: Duration = Duration::from_secs(60);
const MAX_BUCKETS: u64 = 600;

/// Why a window shape was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window bucket width {0:?} is outside 10ms..=60s")]
    Bucket(Duration),
    #[error("window length {length:?} is not a whole number (2 to 600) of {bucket:?} buckets")]
    Length { length: Duration, bucket: Duration },
}

/// A validated window shape: its length and bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    bucket_ms: u64,
    buckets: u64,
}

impl Default for WindowSpec {
    /// 10 s in 1 s buckets.
    fn default() -> Self {
        WindowSpec {
            bucket_ms: 1000,
            buckets: 10,
        }
    }
}

impl WindowSpec {
    /// A window `length` long in buckets `bucket` wide: whole milliseconds, `bucket` within
    /// 10 ms..=60 s and `length` a multiple of it by 2 to 600.
    pub fn new(length: Duration, bucket: Duration) -> Result<WindowSpec, WindowError> {
        let whole_ms = |d: Duration| d.subsec_nanos().is_multiple_of(1_000_000);
        if !(MIN_BUCKET..=MAX_BUCKET).contains(&bucket) || !whole_ms(bucket) {
            return Err(WindowError::Bucket(bucket));
        }
        let bucket_ms = bucket.as_millis() as u64;
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        let buckets = length_ms / bucket_ms;
        if !whole_ms(length)
            || !length_ms.is_multiple_of(bucket_ms)
            || !(2..=MAX_BUCKETS).contains(&buckets)
        {
            return Err(WindowError::Length { length, bucket });
        }
        Ok(WindowSpec { bucket_ms, buckets })
    }

    /// The window's full length.
    pub fn length(&self) -> Duration {
        Duration::from_millis(self.bucket_ms * self.buckets)
    }

    pub fn bucket(&self) -> Duration {
        Duration::from_millis(self.bucket_ms)
    }
}

/// `errors / requests`, 0 without requests.
pub fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

/// Milliseconds from the first window use to `t` (the windows' own clock; 0 for earlier instants).
pub fn clock_ms(t: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// Whether a finished request counts as an error: any 5xx sent (the upstream's, or the proxy's
/// 502/503/504), or an upstream failure whatever was sent (none, or a response cut short).
pub fn is_error(status: u16, upstream_failed: bool) -> bool {
    status >= 500 || upstream_failed
}

/// The histogram bin of a latency in microseconds.
fn bin_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB as u64 {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    let mantissa = (v >> shift) as usize; // in SUB..2*SUB
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The value a bin stands for: its midpoint, in microseconds.
fn bin_value(bin: usize) -> f64 {
    if bin < SUB {
        return bin as f64;
    }
    let shift = (bin / SUB - 1) as u32;
    let low = ((bin % SUB + SUB) as u64) << shift;
    let width = 1u64 << shift;
    low as f64 + (width - 1) as f64 / 2.0
}

/// One bucket of the ring.
struct Bucket {
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    bins: [AtomicU32; BINS],
}

impl Bucket {
    fn new() -> Box<Bucket> {
        Box::new(Bucket {
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bins: std::array::from_fn(|_| AtomicU32::new(0)),
        })
    }

    fn add(&self, bin: usize, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.bins[bin].fetch_add(1, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for b in &self.bins {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// The live figures of one pool: see the module docs for what they cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    /// `None` without requests.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// The configured window length.
    pub window: Duration,
}

/// The sliding window of one (service, pool); shared by every snapshot through an `Arc`.
pub struct PoolWindow {
    spec: WindowSpec,
    buckets: Box<[Box<Bucket>]>,
    /// Every request ever recorded: rollouts count a step's requests by its difference.
    total: AtomicU64,
    /// In a fleet: requests of this pool that the other nodes served, as they published them
    /// (added by the cluster service), so a step counts the fleet's requests.
    elsewhere: AtomicU64,
}

impl std::fmt::Debug for PoolWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolWindow")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl PoolWindow {
    pub fn new(spec: WindowSpec) -> PoolWindow {
        PoolWindow {
            spec,
            buckets: (0..spec.buckets).map(|_| Bucket::new()).collect(),
            total: AtomicU64::new(0),
            elsewhere: AtomicU64::new(0),
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Records one request that finished at `at` (the caller's clock read, which it also used for
    /// `latency`: one read per request).
    pub fn record(&self, at: Instant, latency: Duration, error: bool) {
        self.record_at(clock_ms(at), latency, error);
    }

    /// Records one request that finished at `now_ms` on the windows' clock ([`clock_ms`]).
    pub fn record_at(&self, now_ms: u64, latency: Duration, error: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let epoch = now_ms / self.spec.bucket_ms;
        let slot = &self.buckets[(epoch % self.spec.buckets) as usize];
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bin = bin_of(micros);
        let mut spins = 0u32;
        loop {
            let seen = slot.epoch.load(Ordering::Acquire);
            if seen == epoch {
                slot.add(bin, error);
                return;
            }
            if seen == RESETTING {
                spins += 1;
                if spins < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if seen > epoch {
                // The slot moved on by a whole ring: this event is already out of the window.
                return;
            }
            if slot
                .epoch
                .compare_exchange_weak(seen, RESETTING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // Orders the claim before the zeroing, for readers (see `snapshot_at`).
                fence(Ordering::Release);
                slot.clear();
                slot.add(bin, error);
                slot.epoch.store(epoch, Ordering::Release);
                return;
            }
        }
    }

    /// Requests since the window was made: recorded here, plus (in a fleet) those other nodes
    /// reported ([`PoolWindow::add_elsewhere`]). Rollouts count a step's requests by its growth.
    pub fn total_requests(&self) -> u64 {
        self.own_requests()
            .saturating_add(self.elsewhere.load(Ordering::Relaxed))
    }

    /// Requests recorded on this node since the window was made (what a fleet node publishes).
    pub fn own_requests(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts `n` requests that another node of the fleet served in this pool.
    pub fn add_elsewhere(&self, n: u64) {
        self.elsewhere.fetch_add(n, Ordering::Relaxed);
    }

    /// The figures of the window ending now.
    pub fn snapshot(&self) -> WindowStats {
        self.snapshot_at(clock_ms(Instant::now()))
    }

    /// The figures of the window ending at `now_ms` on the windows' clock ([`clock_ms`]).
    pub fn snapshot_at(&self, now_ms: u64) -> WindowStats {
        self.counts_at(now_ms).stats(self.spec.length())
    }

    /// The raw counts of the window ending now (what a fleet node publishes).
    pub fn counts(&self) -> WindowCounts {
        self.counts_at(clock_ms(Instant::now()))
    }

    /// The raw counts of the window ending at `now_ms` on the windows' clock ([`clock_ms`]).
    pub fn counts_at(&self, now_ms: u64) -> WindowCounts {
        let current = now_ms / self.spec.bucket_ms;
        let oldest = (current + 1).saturating_sub(self.spec.buckets);
        let mut sum = WindowCounts::default();
        for slot in self.buckets.iter() {
            let before = slot.epoch.load(Ordering::Acquire);
            if before == RESETTING || !(oldest..=current).contains(&before) {
                continue;
            }
            let r = slot.requests.load(Ordering::Relaxed);
            let e = slot.errors.load(Ordering::Relaxed);
            let mut these = [0u32; BINS];
            for (out, b) in these.iter_mut().zip(slot.bins.iter()) {
                *out = b.load(Ordering::Relaxed);
            }
            // If any load above saw a reset's zeroing, this load sees RESETTING or a newer epoch.
            fence(Ordering::Acquire);
            if slot.epoch.load(Ordering::Relaxed) != before {
                continue;
            }
            sum.requests += r;
            sum.errors += e;
            for (total, n) in sum.bins.iter_mut().zip(these) {
                *total += u64::from(n);
            }
        }
        sum
    }
}

/// A window's raw counts: requests, errors and the latency histogram. Counts of several windows
/// of one shape (one pool on several nodes) add up exactly: the fleet's figures are those of the
/// sum ([`WindowCounts::add`], then [`WindowCounts::stats`]), not an average of figures.
///
/// Serialized with the histogram sparse (`[[bin, count], ...]`, non-zero bins only).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "SparseCounts", try_from = "SparseCounts")]
pub struct WindowCounts {
    pub requests: u64,
    pub errors: u64,
    bins: Box<[u64; BINS]>,
}

impl Default for WindowCounts {
    fn default() -> Self {
        WindowCounts {
            requests: 0,
            errors: 0,
            bins: Box::new([0; BINS]),
        }
    }
}

impl std::fmt::Debug for WindowCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowCounts")
            .field("requests", &self.requests)
            .field("errors", &self.errors)
            .field("latencies", &self.bins.iter().sum::<u64>())
            .finish()
    }
}

impl WindowCounts {
    /// Adds `other`'s counts to these (saturating: a bogus peer cannot wrap them).
    pub fn add(&mut self, other: &WindowCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (sum, n) in self.bins.iter_mut().zip(other.bins.iter()) {
            *sum = sum.saturating_add(*n);
        }
    }

    /// The figures of these counts over a window `window` long: errors clamped to requests,
    /// quantiles from the histogram's own total.
    pub fn stats(&self, window: Duration) -> WindowStats {
        let errors = self.errors.min(self.requests);
        let total = self.bins.iter().fold(0u64, |t, n| t.saturating_add(*n));
        WindowStats {
            requests: self.requests,
            errors,
            error_rate: error_rate(errors, self.requests),
            p50: quantile(&self.bins, total, 0.5),
            p99: quantile(&self.bins, total, 0.99),
            window,
        }
    }
}

/// The wire form of [`WindowCounts`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SparseCounts {
    requests: u64,
    errors: u64,
    bins: Vec<(u16, u64)>,
}

impl From<WindowCounts> for SparseCounts {
    fn from(c: WindowCounts) -> Self {
        let bins = c
            .bins
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(bin, n)| (bin as u16, *n))
            .collect();
        SparseCounts {
            requests: c.requests,
            errors: c.errors,
            bins,
        }
    }
}

impl TryFrom<SparseCounts> for WindowCounts {
    type Error = String;

    fn try_from(s: SparseCounts) -> Result<Self, String> {
        let mut c = WindowCounts {
            requests: s.requests,
            errors: s.errors,
            ..Default::default()
        };
        for (bin, n) in s.bins {
            let slot = c
                .bins
                .get_mut(usize::from(bin))
                .ok_or_else(|| format!("histogram bin {bin} is out of range (0..{BINS})"))?;
            *slot = slot.saturating_add(n);
        }
        Ok(c)
    }
}

/// The nearest-rank `q` quantile of a histogram holding `total` values, as its bin's midpoint.
fn quantile(bins: &[u64; BINS], total: u64, q: f64) -> Option<Duration> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    let bin = bins.iter().position(|&n| {
        seen = seen.saturating_add(n);
        seen >= rank
    })?;
    Some(Duration::from_nanos((bin_value(bin) * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn spec_is_validated() {
        assert_eq!(WindowSpec::default().length(), Duration::from_secs(10));
        assert_eq!(
            WindowSpec::new(Duration::from_secs(10), Duration::from_secs(1)),
            Ok(WindowSpec::default())
        );
        assert!(WindowSpec::new(ms(500), ms(100)).is_ok());
        assert!(WindowSpec::new(ms(10), ms(10)).is_err(), "one bucket");
        assert!(
            WindowSpec::new(ms(1050), ms(100)).is_err(),
            "not a multiple"
        );
        assert!(
            WindowSpec::new(ms(100), ms(5)).is_err(),
            "bucket too narrow"
        );
        assert!(WindowSpec::new(Duration::from_secs(600), Duration::from_secs(120)).is_err());
        assert!(
            WindowSpec::new(Duration::from_secs(601), ms(10)).is_err(),
            "too many"
        );
    }

    #[test]
    fn bins_are_contiguous_and_bounded() {
        assert_eq!(BINS, 400);
        let mut last = 0;
        for v in 0..100_000u64 {
            let b = bin_of(v);
            assert!(b == last || b == last + 1, "bin jumps at {v}");
            last = b;
            let mid = bin_value(b);
            let err = (mid - v as f64).abs();
            assert!(
                err <= 0.5 || err / v as f64 <= MAX_RELATIVE_ERROR,
                "{v} → {mid}"
            );
        }
        assert_eq!(bin_of(u64::MAX), BINS - 1);
        assert_eq!(bin_of(MAX_MICROS), BINS - 1);
        assert_eq!(bin_of(MAX_MICROS + 1), BINS - 1);
    }

    #[test]
    fn old_events_fall_out_of_the_window() {
        let w = PoolWindow::new(WindowSpec::default());
        // 100 requests at t = 0.5 s, 10 of them errors.
        for i in 0..100u32 {
            w.record_at(500, ms(10), i.is_multiple_of(10));
        }
        let s = w.snapshot_at(500);
        assert_eq!((s.requests, s.errors), (100, 10));
        assert!((s.error_rate - 0.1).abs() < 1e-9);
        // 50 more at t = 5.2 s.
        for _ in 0..50 {
            w.record_at(5_200, ms(20), false);
        }
        assert_eq!(w.snapshot_at(5_200).requests, 150);
        // At 9.999 s the first bucket (epoch 0) is still the oldest one in the window.
        assert_eq!(w.snapshot_at(9_999).requests, 150);
        // At 10 s it is out, even though no writer has reset its slot yet.
        let s = w.snapshot_at(10_000);
        assert_eq!((s.requests, s.errors, s.error_rate), (50, 0, 0.0));
        // A writer at 10.3 s reuses slot 0: the old counts are cleared, not added to.
        w.record_at(10_300, ms(30), true);
        let s = w.snapshot_at(10_300);
        assert_eq!((s.requests, s.errors), (51, 1));
        // A late writer still at epoch 0 finds the slot moved on: its event is dropped.
        w.record_at(999, ms(1), true);
        assert_eq!(w.snapshot_at(10_300).requests, 51);
        // Long after, everything is gone.
        let s = w.snapshot_at(60_000);
        assert_eq!((s.requests, s.p50, s.p99), (0, None, None));
    }

    #[test]
    fn short_buckets_rotate_too() {
        let spec = WindowSpec::new(ms(500), ms(100)).expect("valid spec");
        let w = PoolWindow::new(spec);
        for t in (0..1000).step_by(10) {
            w.record_at(t, ms(1), false);
        }
        // At t = 999 ms the window holds epochs 5..=9: t = 500..999, 50 events.
        assert_eq!(w.snapshot_at(999).requests, 50);
        assert_eq!(w.snapshot_at(1_250).requests, 20, "epochs 8 and 9 left");
    }

    fn within(got: Option<Duration>, want: Duration) -> bool {
        let got = got.expect("a quantile").as_secs_f64();
        let want = want.as_secs_f64();
        (got - want).abs() <= want * MAX_RELATIVE_ERROR + 1e-6
    }

    #[test]
    fn quantiles_of_known_distributions() {
        // Uniform 1..=1000 ms: p50 is 500 ms, p99 is 990 ms.
        let w = PoolWindow::new(WindowSpec::default());
        for i in 1..=1000 {
            w.record_at(0, ms(i), false);
        }
        let s = w.snapshot_at(0);
        assert!(within(s.p50, ms(500)), "{:?}", s.p50);
        assert!(within(s.p99, ms(990)), "{:?}", s.p99);

        // 98 % fast (2 ms), 2 % slow (800 ms): p50 is 2 ms, p99 800 ms.
        let w = PoolWindow::new(WindowSpec::default());
        for i in 0..10_000u32 {
            let latency = if i.is_multiple_of(50) { ms(800) } else { ms(2) };
            w.record_at(1_000, latency, false);
        }
        let s = w.snapshot_at(1_000);
        assert!(within(s.p50, ms(2)), "{:?}", s.p50);
        assert!(within(s.p99, ms(800)), "{:?}", s.p99);

        // Log-uniform from 100 µs to 10 s, spread over several buckets.
        let w = PoolWindow::new(WindowSpec::default());
        let mut all = Vec::new();
        for i in 0..5_000u64 {
            let micros = (100.0 * 1e5f64.powf(i as f64 / 5_000.0)) as u64;
            all.push(micros);
            w.record_at(i % 8 * 1000, Duration::from_micros(micros), false);
        }
        all.sort_unstable();
        let s = w.snapshot_at(7_500);
        assert_eq!(s.requests, 5_000);
        let rank = |q: f64| all[(q * 5_000.0).ceil() as usize - 1];
        assert!(within(s.p50, Duration::from_micros(rank(0.5))));
        assert!(within(s.p99, Duration::from_micros(rank(0.99))));

        // Tiny values are exact; huge ones are clamped.
        let w = PoolWindow::new(WindowSpec::default());
        w.record_at(0, Duration::from_micros(7), false);
        assert_eq!(w.snapshot_at(0).p50, Some(Duration::from_micros(7)));
        w.record_at(0, Duration::from_secs(1_000), false);
        w.record_at(0, Duration::from_secs(1_000), false);
        let p99 = w.snapshot_at(0).p99.expect("a quantile");
        assert!(p99 > Duration::from_secs(260) && p99 < Duration::from_secs(270));
    }

    #[test]
    fn concurrent_writers_lose_no_event() {
        // Bucket turns happen while 4 threads write: each thread's clock advances through 20
        // short buckets, and they start at different times, so they race every reset.
        let spec = WindowSpec::new(ms(400), ms(10)).expect("valid spec");
        let w = Arc::new(PoolWindow::new(spec));
        let threads = 4;
        let per_bucket = 5_000u64;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for epoch in 0..20u64 {
                        for i in 0..per_bucket {
                            w.record_at(epoch * 10 + i % 10, ms(1 + i % 50), i.is_multiple_of(4));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread");
        }
        // The window at t = 199 ms holds all 20 epochs.
        let s = w.snapshot_at(199);
        let want = threads * 20 * per_bucket;
        assert_eq!(s.requests, want);
        assert_eq!(s.errors, want / 4);
        assert!(within(s.p50, ms(25)), "{:?}", s.p50);
    }

    #[test]
    fn counts_of_several_windows_add_up_to_the_window_of_all_their_requests() {
        // Three nodes' windows of one pool, and one window that saw every request.
        let nodes: Vec<PoolWindow> = (0..3)
            .map(|_| PoolWindow::new(WindowSpec::default()))
            .collect();
        let all = PoolWindow::new(WindowSpec::default());
        for i in 0..3_000u64 {
            let latency = ms(1 + i % 97 + if i % 50 == 7 { 400 } else { 0 });
            let error = i % 40 == 3;
            let at = 1_000 + i % 9 * 1000;
            nodes[(i % 3) as usize].record_at(at, latency, error);
            all.record_at(at, latency, error);
        }
        let mut sum = WindowCounts::default();
        for n in &nodes {
            sum.add(&n.counts_at(9_500));
        }
        assert_eq!(sum, all.counts_at(9_500));
        assert_eq!(
            sum.stats(WindowSpec::default().length()),
            all.snapshot_at(9_500)
        );
        // No single node's figures are the fleet's.
        let one = nodes[0].snapshot_at(9_500);
        assert_eq!(one.requests * 3, sum.requests);

        // The sparse wire form round-trips; a bin out of range is refused.
        let text = serde_json::to_string(&sum).expect("serializes");
        assert!(text.len() < 2_000, "sparse: {text}");
        let back: WindowCounts = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, sum);
        let empty: WindowCounts =
            serde_json::from_str(r#"{"requests":0,"errors":0,"bins":[]}"#).expect("parses");
        assert_eq!(empty.stats(ms(1000)).p99, None);
        let bad =
            serde_json::from_str::<WindowCounts>(r#"{"requests":1,"errors":0,"bins":[[400,1]]}"#);
        assert!(bad.is_err());
        // Saturating: a bogus peer's counts cannot wrap the sum.
        let mut huge: WindowCounts = serde_json::from_str(
            r#"{"requests":18446744073709551615,"errors":5,"bins":[[3,18446744073709551615]]}"#,
        )
        .expect("parses");
        huge.add(&sum);
        assert_eq!(huge.requests, u64::MAX);
        assert!(huge.stats(ms(1000)).p50.is_some());
    }

    #[test]
    fn errors_are_5xx_or_upstream_failures() {
        assert!(!is_error(200, false));
        assert!(!is_error(404, false));
        assert!(!is_error(0, false), "client went away");
        assert!(is_error(0, true));
        assert!(is_error(200, true), "response cut short by the upstream");
        for s in [500, 502, 503, 504] {
            assert!(is_error(s, false));
        }
    }
}
