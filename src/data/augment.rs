//! Training-time augmentation, as torchvision's `RandomCrop(32, padding=P)` and
//! `RandomHorizontalFlip(p=0.5)` (in that order), done by the batch-preparation kernel. Each
//! sample's choices come from a counter-based generator keyed on (seed, epoch, sample index), so
//! the same seed gives the same augmented batches whatever the batch size, run after run, and
//! after a resume mid-epoch. The generator is this project's (a 32-bit integer hash the kernel
//! computes too), not torchvision's.

/// What `--augment` asks for; the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// RandomCrop's zero padding on each side (0: no crop).
    pub crop: u32,
    pub flip: bool,
}

/// The largest crop padding accepted (a 32x32 image padded by more is mostly padding).
pub const MAX_CROP: u32 = 16;

impl Augment {
    pub fn is_none(&self) -> bool {
        self.crop == 0 && !self.flip
    }

    /// Parses `--augment`: `none`, or a comma-separated list of `crop:P` and `flip`.
    pub fn parse(s: &str) -> Result<Augment, String> {
        let bad = |why: String| format!("--augment {s:?}: {why}; expected none, crop:P, flip or crop:4,flip");
        let mut a = Augment::default();
        if s.trim() == "none" {
            return Ok(a);
        }
        for part in s.split(',').map(str::trim) {
            if part == "flip" {
                a.flip = true;
            } else if let Some(p) = part.strip_prefix("crop:") {
                let p: u32 = p.parse().map_err(|_| bad(format!("crop padding {p:?} is not a whole number")))?;
                if !(1..=MAX_CROP).contains(&p) {
                    return Err(bad(format!("crop padding {p} is outside 1..={MAX_CROP}")));
                }
                a.crop = p;
            } else {
                return Err(bad(format!("unknown part {part:?}")));
            }
        }
        Ok(a)
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.crop > 0 {
            parts.push(format!("crop:{}", self.crop));
        }
        if self.flip {
            parts.push("flip".to_string());
        }
        if parts.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", parts.join(","))
        }
    }
}

/// A 32-bit integer hash (Chris Wellons' lowbias32); `prepare_batch.wgsl` has the same.
pub fn mix32(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The `k`-th random word of `sample` in `epoch` of the run seeded `seed`.
pub fn draw(seed: u64, epoch: u32, sample: u32, k: u32) -> u32 {
    let key = mix32(seed as u32 ^ mix32((seed >> 32) as u32));
    mix32(mix32(mix32(key ^ epoch) ^ sample) ^ k)
}

/// One sample's choices: the crop window's offset (dy, dx) in 0..=2P of the padded image, and
/// whether it is flipped.
pub fn choices(a: Augment, seed: u64, epoch: u32, sample: u32) -> (u32, u32, bool) {
    let span = 2 * a.crop + 1;
    let (dy, dx) = if a.crop > 0 {
        (draw(seed, epoch, sample, 0) % span, draw(seed, epoch, sample, 1) % span)
    } else {
        (a.crop, a.crop)
    };
    (dy, dx, a.flip && draw(seed, epoch, sample, 2) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_recipes_and_refuses_the_rest() {
        assert_eq!(Augment::parse("none").unwrap(), Augment::default());
        assert_eq!(Augment::parse("crop:4,flip").unwrap(), Augment { crop: 4, flip: true });
        assert_eq!(Augment::parse("flip").unwrap().to_string(), "flip");
        assert_eq!(Augment::parse("crop:4, flip").unwrap().to_string(), "crop:4,flip");
        for bad in ["crop", "crop:0", "crop:x", "crop:17", "rotate", ""] {
            let e = Augment::parse(bad).unwrap_err();
            assert!(e.contains("--augment") && e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn choices_cover_every_offset_and_both_flips() {
        let a = Augment { crop: 4, flip: true };
        let mut seen = [[false; 9]; 2];
        let mut flips = [0usize; 2];
        for s in 0..2000 {
            let (dy, dx, f) = choices(a, 7, 3, s);
            seen[0][dy as usize] = true;
            seen[1][dx as usize] = true;
            flips[f as usize] += 1;
        }
        assert!(seen.iter().flatten().all(|&b| b), "{seen:?}");
        assert!(flips[0] > 900 && flips[1] > 900, "{flips:?}");
        let differ = (0..100).filter(|&s| choices(a, 7, 3, s) != choices(a, 7, 4, s)).count();
        assert!(differ > 90, "epoch 3 and 4 choices differ for only {differ} of 100 samples");
    }
}
