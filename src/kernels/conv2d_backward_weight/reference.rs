//! The CPU reference the weight-gradient kernels are tested against (accumulating in f64).

use crate::kernels::conv2d_forward::ConvShape;

/// CPU reference: (dw, db).
pub fn reference(s: ConvShape, dy: &[f32], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dw = vec![0f64; s.weight_len()];
    let mut db = vec![0f64; s.cout];
    for n in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.cout + co) * oh + oy) * ow + ox] as f64;
                    db[co] += g;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let Some((iy, ix)) = s.input_at(oy, ox, ky, kx) else { continue };
                                let xv = x[((n * s.cin + ci) * s.h + iy) * s.w + ix] as f64;
                                dw[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] += g * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    (dw.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
