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
