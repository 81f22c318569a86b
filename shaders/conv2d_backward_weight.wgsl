// conv2d_backward_weight: dw = sum over batch and output pixels of dy * x (shifted, strided,
// zero-padded), and the
// bias grad db = sum of dy, without atomics and in a fixed order.
// dy [B, COUT, OH, OW], x [B, CIN, H, W] -> dw [COUT, CIN, KH, KW], db [COUT].
//
// Pass 1 (`partials`): workgroup (lane group, co, chunk). Lane l < CIN*KH owns (ci, ky) and
// computes the KW taps dw[co, ci, ky, 0..KW] over the chunk's images: it slides a KW-wide
// window along each input row, so each output pixel costs one input load, one dy load (the
// same address in every lane: b, co, oy, ox are uniform) and KW multiply-adds. Lane
// l == CIN*KH computes the bias grad of co. Results go to partial[chunk][j].
// On a GPU a chunk can also be a block of output rows of one image (`row_blocks` > 1), so that
// the partials pass has thousands of lanes with short loops rather than a few hundred with long
// ones; chunk c is then rows block c % row_blocks of image c / row_blocks.
// Pass 2 (`reduce`): dw/db[j] = sum over chunks c = 0, 1, ... of partial[c][j].
// Shapes are override constants; the chunking depends only on the shape and the adapter (and
// the GPU_LENET_WG_ROWS knob), so runs on one adapter are reproducible bit for bit.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OH: u32 = (H + 2u * PAD - KH) / STRIDE + 1u;
override OW: u32 = (W + 2u * PAD - KW) / STRIDE + 1u;
override NW: u32 = COUT * CIN * KH * KW;
override NOUT: u32 = NW + COUT;

const MAX_K: u32 = 16u;

// Workgroup z is chunk c0 + z; `x` and `dy` are bound from image x_b0 on (the whole batch, or
// 64 KiB uniform windows of them where uniform loads are cheap: see `x_at`, `dy_at` and
// conv2d_forward.wgsl).
struct Params { batch: u32, chunk: u32, chunks: u32, c0: u32, x_b0: u32, row_blocks: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
fn dy_at(i: u32) -> f32 { return dy[i]; }
@group(0) @binding(2) var<storage, read> x: array<f32>;
fn x_at(i: u32) -> f32 { return x[i]; }
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(32, 1, 1)
fn partials(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = gid.x;
    let co = wid.y;
    let c = p.c0 + wid.z;
    if (lane > CIN * KH) { return; }
    let row_blocks = p.row_blocks;
    let b0 = (c / row_blocks) * p.chunk;
    let b1 = min(p.batch, b0 + p.chunk);
    let rows = (OH + row_blocks - 1u) / row_blocks;
    let y0 = min(OH, (c % row_blocks) * rows);
    let y1 = min(OH, y0 + rows);
    let x_b0 = p.x_b0;   // read once: llvmpipe does not hoist uniform loads out of loops
    if (lane == CIN * KH) {
        var s = 0.0;
        for (var b = b0; b < b1; b++) {
            let base = ((b - x_b0) * COUT + co) * OH * OW;
            for (var i = y0 * OW; i < y1 * OW; i++) {
                s += dy_at(base + i);
            }
        }
        partial[c * NOUT + NW + co] = s;
        return;
    }
    let ci = lane / KH;
    let ky = lane % KH;
    var acc: array<f32, MAX_K>;
    for (var b = b0; b < b1; b++) {
        for (var oy = y0; oy < y1; oy++) {
            let drow = (((b - x_b0) * COUT + co) * OH + oy) * OW;
            if (STRIDE != 1u || PAD != 0u) {
                // Strided or padded: each tap's input loaded on its own, zero in the padding.
                let iy = i32(oy * STRIDE + ky) - i32(PAD);
                let row_ok = iy >= 0 && iy < i32(H);
                let xrow = (((b - x_b0) * CIN + ci) * H + u32(clamp(iy, 0, i32(H) - 1))) * W;
                for (var ox = 0u; ox < OW; ox++) {
                    let g = dy_at(drow + ox);
                    for (var kx = 0u; kx < KW; kx++) {
                        let ix = i32(ox * STRIDE + kx) - i32(PAD);
                        let v = x_at(xrow + u32(clamp(ix, 0, i32(W) - 1)));
                        acc[kx] += g * select(0.0, v, row_ok && ix >= 0 && ix < i32(W));
                    }
                }
                continue;
            }
            let xrow = (((b - x_b0) * CIN + ci) * H + oy + ky) * W;
            var win: array<f32, MAX_K>;
            for (var kx = 0u; kx + 1u < KW; kx++) {
                win[kx] = x_at(xrow + kx);
            }
            for (var ox = 0u; ox < OW; ox++) {
                win[KW - 1u] = x_at(xrow + ox + KW - 1u);
                let g = dy_at(drow + ox);
                for (var kx = 0u; kx < KW; kx++) {
                    acc[kx] += g * win[kx];
                }
                for (var kx = 0u; kx + 1u < KW; kx++) {
                    win[kx] = win[kx + 1u];
                }
            }
        }
    }
    let out = c * NOUT + ((co * CIN + ci) * KH + ky) * KW;
    for (var kx = 0u; kx < KW; kx++) {
        partial[out + kx] = acc[kx];
    }
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= NOUT) { return; }
    var acc = 0.0;
    let chunks = p.chunks;
    for (var c = 0u; c < chunks; c++) {
        acc += partial_in[c * NOUT + j];
    }
    if (j < NW) { dw[j] = acc; } else { db[j - NW] = acc; }
}
