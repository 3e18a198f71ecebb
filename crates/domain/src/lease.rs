//! Lease arithmetic (spec §3.3). The lease is anchored at the notebook's creation time;
//! arming it at `T` with run length `D` sets `duration = (T - create_at) + D`, so the
//! auto-stop instant is `create_at + duration = T + D`.
use std::fmt;
use std::str::FromStr;

use crate::EpochMillis;

pub const DEFAULT_RUN_MS: i64 = 3_600_000;
pub const MIN_TIMING_MS: i64 = 3_600_000;
pub const MIN_IDLE_MS: i64 = 900_000;
pub const MAX_RUN_MS: i64 = 259_200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseType {
    Timing,
    Idle,
}

impl LeaseType {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseType::Timing => "TIMING",
            LeaseType::Idle => "IDLE",
        }
    }
}

impl fmt::Display for LeaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseType {
    type Err = LeaseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("TIMING") {
            Ok(LeaseType::Timing)
        } else if text.eq_ignore_ascii_case("IDLE") {
            Ok(LeaseType::Idle)
        } else {
            Err(LeaseError::UnknownType)
        }
    }
}

/// What the user asked for: how long a notebook may run (or stay idle) before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRun {
    /// `duration = -1`: no auto-stop.
    Disabled,
    Enabled {
        kind: LeaseType,
        run_ms: i64,
    },
}

impl LeaseRun {
    /// Parses a requested `(duration, type)`, checking the documented ranges.
    pub fn parse(duration_ms: i64, kind: LeaseType) -> Result<LeaseRun, LeaseError> {
        if duration_ms == -1 {
            return Ok(LeaseRun::Disabled);
        }
        let min = match kind {
            LeaseType::Timing => MIN_TIMING_MS,
            LeaseType::Idle => MIN_IDLE_MS,
        };
        if !(min..=MAX_RUN_MS).contains(&duration_ms) {
            return Err(LeaseError::OutOfRange {
                min,
                max: MAX_RUN_MS,
            });
        }
        Ok(LeaseRun::Enabled {
            kind,
            run_ms: duration_ms,
        })
    }

    pub fn default_timing() -> LeaseRun {
        LeaseRun::Enabled {
            kind: LeaseType::Timing,
            run_ms: DEFAULT_RUN_MS,
        }
    }

    /// The run length as stored: `-1` when disabled.
    pub fn run_ms(self) -> i64 {
        match self {
            LeaseRun::Disabled => -1,
            LeaseRun::Enabled { run_ms, .. } => run_ms,
        }
    }

    pub fn kind(self) -> LeaseType {
        match self {
            LeaseRun::Disabled => LeaseType::Timing,
            LeaseRun::Enabled { kind, .. } => kind,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the duration must lie between {min} and {max} ms, or be -1")]
    OutOfRange { min: i64, max: i64 },
    #[error("the lease type must be TIMING or IDLE")]
    UnknownType,
}

/// The lease as ModelArts shows it, plus the run length last asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub create_at: EpochMillis,
    /// Milliseconds from `create_at` to the auto-stop instant (meaningful when enabled).
    pub duration: i64,
    pub enable: bool,
    pub kind: LeaseType,
    pub update_at: EpochMillis,
    /// The run length `D` last asked for; re-used when a start names none.
    pub run: LeaseRun,
}

impl Lease {
    /// The lease of a notebook created at `create_at`, armed at that instant.
    pub fn new(create_at: EpochMillis, run: LeaseRun) -> Lease {
        let mut lease = Lease {
            create_at,
            duration: 0,
            enable: false,
            kind: LeaseType::Timing,
            update_at: create_at,
            run,
        };
        lease.arm(create_at, run);
        lease
    }

    /// Arms the lease at `now` for `run`.
    pub fn arm(&mut self, now: EpochMillis, run: LeaseRun) {
        self.run = run;
        self.update_at = now;
        match run {
            LeaseRun::Disabled => {
                self.enable = false;
                self.kind = LeaseType::Timing;
            }
            LeaseRun::Enabled { kind, run_ms } => {
                self.enable = true;
                self.kind = kind;
                self.duration = (now - self.create_at).max(0) + run_ms;
            }
        }
    }

    /// Re-arms with the run length last asked for (start without parameters, reaching RUNNING).
    pub fn rearm(&mut self, now: EpochMillis) {
        self.arm(now, self.run);
    }

    /// The instant a TIMING lease expires; `None` when auto-stop is off or the lease is IDLE.
    pub fn timing_deadline(&self) -> Option<EpochMillis> {
        (self.enable && self.kind == LeaseType::Timing).then_some(self.create_at + self.duration)
    }

    /// For an IDLE lease: the instant the notebook counts as idle, given its last activity.
    pub fn idle_deadline(&self, last_activity: EpochMillis) -> Option<EpochMillis> {
        match self.run {
            LeaseRun::Enabled {
                kind: LeaseType::Idle,
                run_ms,
            } if self.enable => Some(last_activity.max(self.update_at) + run_ms),
            _ => None,
        }
    }

    pub fn remaining_ms(&self, now: EpochMillis) -> Option<i64> {
        self.timing_deadline().map(|deadline| deadline - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The OTC end-to-end example of spec §3.3, number for number.
    #[test]
    fn otc_example_numbers() {
        let create_at = 1_687_656_452_470;
        let one_hour = LeaseRun::default_timing();
        let mut lease = Lease::new(create_at, one_hour);
        assert_eq!((lease.duration, lease.update_at), (3_600_000, create_at));
        lease.rearm(1_687_656_479_842);
        assert_eq!(lease.duration, 3_627_372);
        lease.arm(1_687_657_510_014, one_hour);
        assert_eq!(lease.duration, 4_657_544);
        lease.arm(1_687_659_392_569, one_hour);
        assert_eq!(lease.duration, 6_540_099);
        assert_eq!(lease.timing_deadline(), Some(1_687_659_392_569 + 3_600_000));
    }

    #[test]
    fn seed_start_example() {
        let mut lease = Lease::new(1_638_841_744_515, LeaseRun::default_timing());
        lease.arm(1_638_844_471_727, LeaseRun::default_timing());
        assert_eq!(lease.duration, 6_327_212);
    }

    #[test]
    fn minus_one_disables_auto_stop() {
        let run = LeaseRun::parse(-1, LeaseType::Timing).unwrap();
        let lease = Lease::new(1_000, run);
        assert!(!lease.enable);
        assert_eq!(lease.timing_deadline(), None);
        assert_eq!(lease.run.run_ms(), -1);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(LeaseRun::parse(3_599_999, LeaseType::Timing).is_err());
        assert!(LeaseRun::parse(3_600_000, LeaseType::Timing).is_ok());
        assert!(LeaseRun::parse(259_200_000, LeaseType::Timing).is_ok());
        assert!(LeaseRun::parse(259_200_001, LeaseType::Timing).is_err());
        assert!(LeaseRun::parse(900_000, LeaseType::Idle).is_ok());
        assert!(LeaseRun::parse(899_999, LeaseType::Idle).is_err());
        assert!(LeaseRun::parse(0, LeaseType::Timing).is_err());
        assert!(LeaseRun::parse(-2, LeaseType::Timing).is_err());
        assert_eq!("timing".parse::<LeaseType>(), Ok(LeaseType::Timing));
        assert!("soon".parse::<LeaseType>().is_err());
    }

    #[test]
    fn idle_deadline_follows_activity() {
        let run = LeaseRun::parse(900_000, LeaseType::Idle).unwrap();
        let lease = Lease::new(0, run);
        assert_eq!(lease.timing_deadline(), None);
        assert_eq!(lease.idle_deadline(10_000), Some(910_000));
    }

    proptest! {
        #[test]
        fn deadline_is_arm_time_plus_run(create_at in 0i64..2_000_000_000_000, later in 0i64..10_000_000_000, run_ms in MIN_TIMING_MS..=MAX_RUN_MS) {
            let run = LeaseRun::parse(run_ms, LeaseType::Timing).unwrap();
            let mut lease = Lease::new(create_at, LeaseRun::default_timing());
            lease.arm(create_at + later, run);
            prop_assert_eq!(lease.timing_deadline(), Some(create_at + later + run_ms));
            prop_assert_eq!(lease.create_at, create_at);
        }
    }
}
