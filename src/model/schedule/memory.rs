//! Where a step's tensors live. Each tensor's lifetime is an interval on the step's timeline
//! (forward groups, the loss, backward groups in reverse); tensors whose intervals do not meet
//! share a buffer, so a step needs the memory of its widest point, not the sum of its tensors.
//! Every binding the planner makes is checked against these intervals as it is made.

use std::cell::RefCell;

/// One tensor of a step: its name, its size in 32-bit words (with any slack its readers need)
/// and the first and last moments of the timeline that touch it.
#[derive(Clone, Debug)]
pub struct Lifetime {
    pub name: String,
    pub words: usize,
    pub first: usize,
    pub last: usize,
}

/// Buffers for `tensors`: the buffer of each tensor and each buffer's size in words. Tensors are
/// placed in order of first use; each takes the smallest free buffer that fits, else grows the
/// largest free one, else starts a new one. Deterministic: same tensors, same layout.
pub fn assign(tensors: &[Lifetime]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].first, std::cmp::Reverse(tensors[i].words), i));
    let mut of_tensor = vec![usize::MAX; tensors.len()];
    // Each buffer's size and the last moment a tensor placed in it is live.
    let mut buffers: Vec<(usize, usize)> = Vec::new();
    for i in order {
        let t = &tensors[i];
        let free = |b: &&(usize, usize)| b.1 < t.first;
        let fits = buffers.iter().enumerate().filter(|(_, b)| free(b) && b.0 >= t.words).min_by_key(|(j, b)| (b.0, *j));
        let grows = || buffers.iter().enumerate().filter(|(_, b)| free(b)).max_by_key(|(j, b)| (b.0, usize::MAX - j));
        let chosen = fits.or_else(grows).map(|(j, _)| j);
        let j = match chosen {
            Some(j) => j,
            None => {
                buffers.push((0, 0));
                buffers.len() - 1
            }
        };
        buffers[j] = (buffers[j].0.max(t.words), t.last);
        of_tensor[i] = j;
    }
    (of_tensor, buffers.into_iter().map(|b| b.0).collect())
}

/// The step's memory for its tensors: with the sharing above, and what one buffer per tensor
/// would take.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub tensors: usize,
    pub buffers: usize,
    pub shared_bytes: u64,
    pub unshared_bytes: u64,
}

impl Memory {
    pub fn of(tensors: &[Lifetime], buffer_words: &[usize]) -> Memory {
        Memory {
            tensors: tensors.len(),
            buffers: buffer_words.len(),
            shared_bytes: 4 * buffer_words.iter().sum::<usize>() as u64,
            unshared_bytes: 4 * tensors.iter().map(|t| t.words).sum::<usize>() as u64,
        }
    }
}

/// The planner's record of which tensor it binds at which moment of the timeline.
#[derive(Default)]
pub struct Uses {
    now: std::cell::Cell<usize>,
    seen: RefCell<Vec<(String, usize)>>,
}

impl Uses {
    pub fn at(&self, moment: usize) {
        self.now.set(moment);
    }
    pub fn touch(&self, name: &str) {
        self.seen.borrow_mut().push((name.to_string(), self.now.get()));
    }
    /// Panics (a planner bug, never a user's) if a tensor was bound outside its lifetime: a
    /// shared buffer would then hold another tensor's values.
    pub fn check(&self, tensors: &[Lifetime]) {
        for (name, at) in self.seen.borrow().iter() {
            let t = tensors.iter().find(|t| &t.name == name).unwrap_or_else(|| panic!("no tensor named {name}"));
            assert!(
                (t.first..=t.last).contains(at),
                "tensor {name} bound at moment {at}, outside its lifetime {}..={}",
                t.first,
                t.last
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetimes(seed: u64, n: usize) -> Vec<Lifetime> {
        let mut s = seed;
        let mut next = |m: usize| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as usize) % m
        };
        (0..n)
            .map(|i| {
                let first = next(20);
                Lifetime { name: format!("t{i}"), words: 1 + next(1000), first, last: first + next(8) }
            })
            .collect()
    }

    #[test]
    fn tensors_alive_together_never_share_and_every_tensor_fits() {
        for seed in 0..200 {
            let ts = lifetimes(seed, 1 + (seed as usize % 17));
            let (of, words) = assign(&ts);
            for (i, a) in ts.iter().enumerate() {
                assert!(words[of[i]] >= a.words, "seed {seed}: {} does not fit", a.name);
                for (j, b) in ts.iter().enumerate().skip(i + 1) {
                    let meet = a.first <= b.last && b.first <= a.last;
                    assert!(!(meet && of[i] == of[j]), "seed {seed}: {} and {} share while both live", a.name, b.name);
                }
            }
            // Never more than one buffer per tensor, never more than the sum.
            let m = Memory::of(&ts, &words);
            assert!(m.buffers <= m.tensors && m.shared_bytes <= m.unshared_bytes, "seed {seed}: {m:?}");
        }
    }

    #[test]
    fn a_chain_of_short_lives_takes_two_buffers() {
        // Gradients of a chain: each written when the next is read, then dead.
        let ts: Vec<Lifetime> =
            (0..6).map(|i| Lifetime { name: format!("d{i}"), words: 10 + i, first: i, last: i + 1 }).collect();
        let (of, words) = assign(&ts);
        assert_eq!(words.len(), 2, "{of:?}");
        assert_eq!(words, vec![14, 15]);
    }

    #[test]
    fn a_binding_outside_a_lifetime_is_caught() {
        let ts = vec![Lifetime { name: "a".into(), words: 4, first: 2, last: 3 }];
        let uses = Uses::default();
        uses.at(3);
        uses.touch("a");
        uses.check(&ts);
        uses.at(4);
        uses.touch("a");
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| uses.check(&ts))).is_err());
    }
}
