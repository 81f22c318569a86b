//! `--lr-schedule`: the learning rate (and for onecycle the momentum) of every step, each value
//! meaning exactly the PyTorch scheduler it is named after, computed as that scheduler computes
//! it (in f64, its recursive forms where it uses them) and handed to the kernels in f32, as
//! `torch.optim.SGD` applies it. The host fills one epoch's rates into the step table at a time.

use std::f64::consts::PI;

#[derive(Clone, Debug, Default, PartialEq)]
pub enum LrSchedule {
    /// The rate given, every step.
    #[default]
    Constant,
    /// `StepLR(step_size, gamma)`, stepped once per epoch.
    Step { size: usize, gamma: f64 },
    /// `MultiStepLR(milestones, gamma)`, stepped once per epoch.
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// `CosineAnnealingLR(T_max=epochs)`, stepped once per epoch.
    Cosine,
    /// `OneCycleLR(max_lr=lr, total_steps=epochs*steps_per_epoch)` with its defaults, stepped after
    /// every batch; it also cycles the momentum between 0.95 and 0.85.
    OneCycle,
}

const EXPECTED: &str = "expected constant, step:S:G, multistep:M1,M2,...:G, cosine or onecycle";

impl LrSchedule {
    pub fn parse(s: &str) -> Result<LrSchedule, String> {
        let bad = |why: &str| format!("--lr-schedule {s:?}: {why}; {EXPECTED}");
        let gamma = |g: &str| -> Result<f64, String> {
            let v: f64 = g.parse().map_err(|_| bad(&format!("gamma {g:?} is not a number")))?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad(&format!("gamma {g} must be positive")))
            }
        };
        let parts: Vec<&str> = s.trim().split(':').collect();
        match parts.as_slice() {
            ["constant"] => Ok(LrSchedule::Constant),
            ["cosine"] => Ok(LrSchedule::Cosine),
            ["onecycle"] => Ok(LrSchedule::OneCycle),
            ["step", size, g] => {
                let size: usize =
                    size.parse().map_err(|_| bad(&format!("step size {size:?} is not a whole number")))?;
                if size == 0 {
                    return Err(bad("the step size must be at least 1"));
                }
                Ok(LrSchedule::Step { size, gamma: gamma(g)? })
            }
            ["multistep", ms, g] => {
                let milestones = ms
                    .split(',')
                    .map(|m| {
                        m.trim().parse::<usize>().map_err(|_| bad(&format!("milestone {m:?} is not a whole number")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad("milestones must be increasing"));
                }
                Ok(LrSchedule::MultiStep { milestones, gamma: gamma(g)? })
            }
            _ => Err(bad("not a schedule")),
        }
    }

    /// Whether the schedule sets the momentum (onecycle), overriding `--momentum`.
    /// Whether the rates depend on the run's length (`T_max` or `total_steps` is `--epochs`): a
    /// resume with another `--epochs` would follow a different curve.
    pub fn spans_the_run(&self) -> bool {
        matches!(self, LrSchedule::Cosine | LrSchedule::OneCycle)
    }

    pub fn cycles_momentum(&self) -> bool {
        *self == LrSchedule::OneCycle
    }

    /// The (lr, momentum) of every step of epoch `epoch` (0-based) of a run of `epochs` epochs of
    /// `steps` steps each, from `--lr` and `--momentum`.
    pub fn epoch_rates(&self, lr: f64, momentum: f64, epochs: usize, steps: usize, epoch: usize) -> Vec<(f32, f32)> {
        match self {
            LrSchedule::OneCycle => (0..steps)
                .map(|s| one_cycle(lr, epochs * steps, epoch * steps + s))
                .map(|(l, m)| (l as f32, m as f32))
                .collect(),
            _ => vec![(self.epoch_lr(lr, epochs, epoch) as f32, momentum as f32); steps],
        }
    }

    /// An epoch-stepped schedule's rate for `epoch`, by the scheduler's own recursion from
    /// epoch 0 (PyTorch multiplies the group's current rate; the closed form can differ in the
    /// last bit).
    fn epoch_lr(&self, base: f64, epochs: usize, epoch: usize) -> f64 {
        let mut lr = base;
        for e in 1..=epoch {
            lr = match self {
                LrSchedule::Constant | LrSchedule::OneCycle => lr,
                LrSchedule::Step { size, gamma } => {
                    if e % size == 0 {
                        lr * gamma
                    } else {
                        lr
                    }
                }
                LrSchedule::MultiStep { milestones, gamma } => {
                    let hits = milestones.iter().filter(|&&m| m == e).count() as i32;
                    if hits > 0 {
                        lr * gamma.powi(hits)
                    } else {
                        lr
                    }
                }
                LrSchedule::Cosine => {
                    let t = epochs as f64;
                    if (e as i64 - 1 - epochs as i64).rem_euclid(2 * epochs as i64) == 0 {
                        lr + base * (1.0 - (PI / t).cos()) / 2.0
                    } else {
                        (1.0 + (PI * e as f64 / t).cos()) / (1.0 + (PI * (e as f64 - 1.0) / t).cos()) * lr
                    }
                }
            };
        }
        lr
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Cosine => write!(f, "cosine"),
            LrSchedule::OneCycle => write!(f, "onecycle"),
            LrSchedule::Step { size, gamma } => write!(f, "step:{size}:{gamma}"),
            LrSchedule::MultiStep { milestones, gamma } => {
                let ms: Vec<String> = milestones.iter().map(|m| m.to_string()).collect();
                write!(f, "multistep:{}:{gamma}", ms.join(","))
            }
        }
    }
}

/// OneCycleLR's (lr, momentum) at step `step` of `total`: two cosine phases (pct_start 0.3),
/// from max_lr / 25 up to max_lr and down to max_lr / 25 / 1e4, the momentum from 0.95 down to
/// 0.85 and back.
fn one_cycle(max_lr: f64, total: usize, step: usize) -> (f64, f64) {
    let initial = max_lr / 25.0;
    let min = initial / 1e4;
    let (base_m, max_m) = (0.85, 0.95);
    let anneal = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
    let end1 = 0.3 * total as f64 - 1.0;
    let s = step as f64;
    if s <= end1 {
        let pct = s / end1;
        (anneal(initial, max_lr, pct), anneal(max_m, base_m, pct))
    } else {
        let pct = (s - end1) / (total as f64 - 1.0 - end1);
        (anneal(max_lr, min, pct), anneal(base_m, max_m, pct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_schedule_and_names_what_is_wrong() {
        for s in ["constant", "cosine", "onecycle", "step:1:0.5", "multistep:2,5:0.1"] {
            assert_eq!(LrSchedule::parse(s).unwrap().to_string(), s);
        }
        for (s, why) in [
            ("step:0:0.5", "at least 1"),
            ("step:x:0.5", "not a whole number"),
            ("step:1:-1", "positive"),
            ("multistep:5,2:0.1", "increasing"),
            ("linear", "not a schedule"),
        ] {
            let e = LrSchedule::parse(s).unwrap_err();
            assert!(e.contains(why) && e.contains("--lr-schedule") && e.contains("expected"), "{s}: {e}");
        }
    }

    #[test]
    fn epoch_schedules_follow_their_definitions() {
        let step = LrSchedule::parse("step:2:0.5").unwrap();
        let lrs: Vec<f32> = (0..5).map(|e| step.epoch_rates(0.1, 0.9, 5, 1, e)[0].0).collect();
        assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05, 0.025]);
        let ms = LrSchedule::parse("multistep:1,3:0.1").unwrap();
        let lrs: Vec<f64> = (0..4).map(|e| ms.epoch_rates(1.0, 0.9, 4, 1, e)[0].0 as f64).collect();
        assert!((lrs[1] - 0.1).abs() < 1e-7 && (lrs[3] - 0.01).abs() < 1e-8, "{lrs:?}");
        // The recursion against the closed form eta_max * (1 + cos(pi e / T)) / 2.
        let cos = LrSchedule::Cosine;
        for e in 0..10 {
            let closed = 0.1 * (1.0 + (PI * e as f64 / 10.0).cos()) / 2.0;
            assert!((cos.epoch_rates(0.1, 0.9, 10, 3, e)[2].0 as f64 - closed).abs() < 1e-8, "epoch {e}");
        }
    }

    #[test]
    fn onecycle_warms_up_to_the_peak_then_anneals_with_the_momentum_mirrored() {
        let s = LrSchedule::OneCycle;
        let (epochs, steps) = (2, 50);
        let all: Vec<(f32, f32)> = (0..epochs).flat_map(|e| s.epoch_rates(0.1, 0.9, epochs, steps, e)).collect();
        assert!((all[0].0 - 0.004).abs() < 1e-9 && (all[0].1 - 0.95).abs() < 1e-7, "{:?}", all[0]);
        let peak = (0..all.len()).max_by(|&a, &b| all[a].0.total_cmp(&all[b].0)).unwrap();
        assert_eq!(peak, 29, "the peak at pct_start * total - 1");
        assert!((all[peak].0 - 0.1).abs() < 1e-7 && (all[peak].1 - 0.85).abs() < 1e-7);
        let last = all[all.len() - 1];
        assert!((last.0 as f64 - 0.004 / 1e4).abs() < 1e-12 && (last.1 - 0.95).abs() < 1e-7, "{last:?}");
    }
}
