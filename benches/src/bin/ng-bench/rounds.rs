//! Interleaved rounds: how ng-bench measures programs side by side on a noisy machine.

/// One program's test run of a frame, `repeat` times: mean ns per run.
pub(crate) type TimedRun = Box<dyn FnMut(&[u8], u32) -> anyhow::Result<f64>>;

/// Every program's figure in each of `rounds` rounds (`samples[program][round]`). A round
/// measures every program once, in turn, each round starting one program later so that no
/// program always follows the same one: on a shared machine noise comes in phases, and
/// programs measured one block after another can land one in a quiet phase and the next in
/// a loud one.
pub(crate) fn interleaved<P, S: Clone>(
    programs: &mut [P],
    rounds: usize,
    mut measure: impl FnMut(&mut P) -> anyhow::Result<S>,
) -> anyhow::Result<Vec<Vec<S>>> {
    let count = programs.len();
    let mut samples = vec![Vec::with_capacity(rounds); count];
    for round in 0..rounds {
        for k in 0..count {
            let i = (round + k) % count;
            samples[i].push(measure(&mut programs[i])?);
        }
    }
    Ok(samples)
}

/// Median, minimum and maximum of `samples` (not empty).
pub(crate) fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

/// Median, minimum and maximum of the per-round ratios `num[round] / den[round]` of two
/// programs measured in the same rounds (not empty, of equal length). Steadier than the ratio
/// of their medians: a loud phase that falls on one program's run of a round falls on the
/// other's a moment later or earlier, so it moves both sides of a round's ratio alike.
pub(crate) fn ratio_spread(num: &[f64], den: &[f64]) -> (f64, f64, f64) {
    spread(num.iter().zip(den).map(|(a, b)| a / b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_rotates_the_first_program_each_round() {
        let mut order = Vec::new();
        let mut programs = [0, 1, 2];
        let samples = interleaved(&mut programs, 4, |p| {
            order.push(*p);
            Ok(*p * 10)
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]);
        assert_eq!(samples, [vec![0; 4], vec![10; 4], vec![20; 4]]);
    }

    #[test]
    fn ratio_spread_takes_ratios_within_rounds() {
        // The third round is loud for both programs: its ratio is still 2.
        let (median, min, max) = ratio_spread(&[20.0, 21.0, 80.0], &[10.0, 10.0, 40.0]);
        assert_eq!((median, min, max), (2.0, 2.0, 2.1));
        // The ratio of the medians (21 / 10) would have said 2.1.
        assert_eq!(
            spread(vec![20.0, 21.0, 80.0]).0 / spread(vec![10.0, 10.0, 40.0]).0,
            2.1
        );
    }
}
