//! Wall-clock timing of one case: warm up, then repeat until both a minimum
//! count and a minimum total time are reached (or a maximum count), and
//! report the median.

use std::time::Instant;

use super::config::TimingPolicy;

/// Timed runs of one case, in seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Timed runs performed.
    pub reps: usize,
    /// Median seconds per run.
    pub median_s: f64,
    /// Fastest run, seconds.
    pub min_s: f64,
}

/// Runs `f` `policy.warmup` times untimed, then times it until at least
/// `min_reps` runs and `min_time` in total, or `max_reps` runs; the first
/// error stops it.
///
/// The median rather than the mean: a 2-core machine sees the odd
/// scheduler hiccup, and one slow run should not move the number.
pub fn time_runs<E>(
    policy: &TimingPolicy,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<Timing, E> {
    for _ in 0..policy.warmup {
        f()?;
    }
    let min_reps = policy.min_reps.max(1);
    let max_reps = policy.max_reps.max(min_reps);
    let mut samples = Vec::with_capacity(min_reps);
    let mut total = 0.0;
    while samples.len() < max_reps
        && (samples.len() < min_reps || total < policy.min_time.as_secs_f64())
    {
        let start = Instant::now();
        f()?;
        let s = start.elapsed().as_secs_f64();
        total += s;
        samples.push(s);
    }
    let min_s = samples.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Timing {
        reps: samples.len(),
        median_s: median(&mut samples),
        min_s,
    })
}

/// The median of `values` (mean of the middle two for an even count);
/// NaN for an empty slice.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn respects_min_and_max_reps() {
        let mut calls = 0;
        let policy = TimingPolicy {
            warmup: 2,
            min_reps: 3,
            min_time: Duration::ZERO,
            max_reps: 10,
        };
        let t = time_runs::<()>(&policy, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.reps, 3);
        assert_eq!(calls, 5);

        let policy = TimingPolicy {
            warmup: 0,
            min_reps: 1,
            min_time: Duration::from_secs(3600),
            max_reps: 4,
        };
        assert_eq!(time_runs::<()>(&policy, || Ok(())).unwrap().reps, 4);
        assert_eq!(time_runs(&policy, || Err("boom")), Err("boom"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
