//! Pillow's `Image.resize(size, BILINEAR)`, which torchvision's `Resize` calls on a picture:
//! a triangle filter widened by the reduction factor (so a large picture is averaged, not
//! sampled), applied across then down, in Pillow's 22-bit fixed point with a rounding to 8 bits
//! between the passes (libImaging/Resample.c). Written out so that a picture gives the network
//! the same bytes it gets in Python.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's window into the input: its first input pixel and fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// The taps of each of `out_size` outputs over `in_size` inputs (Pillow's precompute_coeffs
/// and normalize_coeffs_8bpc).
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear filter's support is 1
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; the clamp makes that the same as floor here.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let k: Vec<f64> = (lo..hi)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = k.iter().sum();
            let one = (1u32 << PRECISION_BITS) as f64;
            let weights = k
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    (if w < 0.0 { -0.5 + w * one } else { 0.5 + w * one }).trunc() as i32
                })
                .collect();
            Taps { first: lo, weights }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along an axis: `lines` lines of `len` samples each, `stride` apart between samples
/// and `line_step` apart between lines.
#[allow(clippy::too_many_arguments)]
fn pass(
    src: &[u8],
    lines: usize,
    line_step: usize,
    stride: usize,
    taps: &[Taps],
    out_line_step: usize,
    out_stride: usize,
    out: &mut [u8],
) {
    for line in 0..lines {
        for (o, t) in taps.iter().enumerate() {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &w) in t.weights.iter().enumerate() {
                acc += src[line * line_step + (t.first + i) * stride] as i64 * w as i64;
            }
            out[line * out_line_step + o * out_stride] = clip8(acc);
        }
    }
}

/// Resizes a `channels`-interleaved `w`x`h` picture to `out_w`x`out_h` as Pillow does.
pub fn bilinear(pixels: &[u8], channels: usize, w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    assert_eq!(pixels.len(), channels * w * h, "picture size");
    // Across first (each channel of each row), then down (each channel of each column).
    let across = if out_w != w {
        let t = taps(w, out_w);
        let mut o = vec![0u8; channels * out_w * h];
        for c in 0..channels {
            pass(&pixels[c..], h, w * channels, channels, &t, out_w * channels, channels, &mut o[c..]);
        }
        o
    } else {
        pixels.to_vec()
    };
    if out_h == h {
        return across;
    }
    let t = taps(h, out_h);
    let mut o = vec![0u8; channels * out_w * out_h];
    for c in 0..channels {
        pass(&across[c..], out_w, channels, out_w * channels, &t, channels, out_w * channels, &mut o[c..]);
    }
    o
}

/// Pillow's `convert("L")` of RGB bytes: ITU-R 601-2 luma in 16-bit fixed point.
pub fn luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_same_picture_and_a_flat_picture_stays_flat() {
        let p: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(bilinear(&p, 3, 5, 7, 5, 7), p);
        let flat = vec![93u8; 3 * 50 * 41];
        assert!(bilinear(&flat, 3, 50, 41, 32, 32).iter().all(|&v| v == 93));
        assert!(bilinear(&flat[..3 * 6 * 4], 3, 6, 4, 32, 32).iter().all(|&v| v == 93));
    }

    #[test]
    fn halving_averages_the_pixels_it_covers() {
        // 4 -> 2: each output's window covers the 2 inputs under it and half of each neighbour.
        let row = [0u8, 100, 200, 40];
        let out = bilinear(&row, 1, 4, 1, 2, 1);
        // Output 0: center 1.0, taps 0..3 (weights 0.75, 0.75, 0.25 before normalising to 1).
        let want0 = ((0.0 * 0.75 + 100.0 * 0.75 + 200.0 * 0.25) / 1.75f64).round() as u8;
        assert_eq!(out[0], want0);
        assert_eq!(luma(&[255, 255, 255, 0, 0, 0, 255, 0, 0]), vec![255, 0, 76]);
    }
}
