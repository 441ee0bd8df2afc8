//! When each event of a phase is due: constant or linearly ramped rates,
//! evenly spaced or with Poisson (exponential) gaps.

use crate::scenario::Arrival;

/// Poisson phases stop after this many times the expected count (and 1,000 more), whatever the dice say.
const POISSON_CAP_FACTOR: f64 = 4.0;

/// Due offsets (seconds from the phase start) of one phase's events.
///
/// The rate goes linearly from `from` to `to` over `secs`; the expected
/// number of events by time `t` is `N(t) = from·t + (to − from)·t² / (2·secs)`.
/// Event *k* is due where `N(t)` reaches `k` (constant arrival) or the
/// *k*-th point of a unit-rate Poisson process (`uniform` gives the dice,
/// numbers in `0..1`), mapped through the inverse of `N`.
pub struct Schedule<F> {
    from: f64,
    slope: f64,
    secs: f64,
    arrival: Arrival,
    uniform: F,
    /// The position on the `N` axis of the next event.
    position: f64,
    emitted: u64,
    cap: u64,
}

impl<F: FnMut() -> f64> Schedule<F> {
    pub fn new(from: f64, to: f64, secs: f64, arrival: Arrival, uniform: F) -> Self {
        let expected = (from + to) / 2.0 * secs;
        let cap = match arrival {
            Arrival::Constant => expected.round() as u64,
            Arrival::Poisson => (expected * POISSON_CAP_FACTOR) as u64 + 1000,
        };
        let mut schedule =
            Self { from, slope: (to - from) / secs, secs, arrival, uniform, position: 0.0, emitted: 0, cap };
        schedule.position = schedule.gap();
        schedule
    }

    /// The next gap on the `N` axis: 1, or exponential with mean 1.
    fn gap(&mut self) -> f64 {
        match self.arrival {
            Arrival::Constant => {
                if self.emitted == 0 {
                    0.0
                } else {
                    1.0
                }
            }
            Arrival::Poisson => -(1.0 - (self.uniform)()).max(f64::MIN_POSITIVE).ln(),
        }
    }

    /// The time at which `N(t) = n`; `None` past the phase's end.
    fn time_of(&self, n: f64) -> Option<f64> {
        let t = if self.slope.abs() < 1e-12 {
            if self.from <= 0.0 {
                return None;
            }
            n / self.from
        } else {
            let discriminant = self.from * self.from + 2.0 * self.slope * n;
            if discriminant < 0.0 {
                return None;
            }
            (discriminant.sqrt() - self.from) / self.slope
        };
        (t.is_finite() && t < self.secs).then_some(t)
    }
}

impl<F: FnMut() -> f64> Iterator for Schedule<F> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.emitted >= self.cap {
            return None;
        }
        let t = self.time_of(self.position)?;
        self.emitted += 1;
        self.position += self.gap();
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> f64 {
        0.5
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let times: Vec<f64> = Schedule::new(10.0, 10.0, 1.0, Arrival::Constant, never).collect();
        assert_eq!(times.len(), 10);
        for (k, t) in times.iter().enumerate() {
            assert!((t - k as f64 / 10.0).abs() < 1e-9, "{times:?}");
        }
    }

    #[test]
    fn ramp_sends_the_area_under_the_rate_and_speeds_up() {
        let times: Vec<f64> = Schedule::new(0.0, 100.0, 10.0, Arrival::Constant, never).collect();
        assert_eq!(times.len(), 500, "(0 + 100) / 2 * 10");
        let first_half = times.iter().filter(|&&t| t < 5.0).count();
        assert!((120..=130).contains(&first_half), "a quarter of the area lies in the first half: {first_half}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.iter().all(|&t| (0.0..10.0).contains(&t)));
    }

    #[test]
    fn ramp_down_mirrors_ramp_up() {
        let times: Vec<f64> = Schedule::new(100.0, 0.0, 10.0, Arrival::Constant, never).collect();
        let first_half = times.iter().filter(|&&t| t < 5.0).count();
        assert!((370..=380).contains(&first_half), "{first_half} of {}", times.len());
    }

    #[test]
    fn zero_rate_has_no_events() {
        assert_eq!(Schedule::new(0.0, 0.0, 5.0, Arrival::Constant, never).count(), 0);
        assert_eq!(Schedule::new(0.0, 0.0, 5.0, Arrival::Poisson, never).count(), 0);
    }

    #[test]
    fn poisson_stays_in_the_phase_near_the_expected_count_and_is_bounded() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let times: Vec<f64> = Schedule::new(1000.0, 1000.0, 10.0, Arrival::Poisson, uniform).collect();
        assert!((9_700..=10_300).contains(&times.len()), "{}", times.len());
        assert!(times.iter().all(|&t| (0.0..10.0).contains(&t)));
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let short = gaps.iter().filter(|&&g| g < 0.001).count() as f64 / gaps.len() as f64;
        assert!((0.58..0.68).contains(&short), "P(gap < mean) = 1 - 1/e: {short}");

        // Dice that always say "no time passed" cannot run away.
        let capped = Schedule::new(10.0, 10.0, 1.0, Arrival::Poisson, || 0.0).count();
        assert_eq!(capped, 1040);
    }
}
