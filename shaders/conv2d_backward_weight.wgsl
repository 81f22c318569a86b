// conv2d_backward_weight: dw = sum over batch and output pixels of dy * x (shifted), and the
// bias grad db = sum of dy, without atomics and in a fixed order.
// dy [B, Cout, OH, OW], x [B, Cin, H, W] -> dw [Cout, Cin, KH, KW], db [Cout].
//
// Pass 1 (`partials`): invocation (j, c) sums the terms of output j (a weight, or a bias when
// j >= Cout*Cin*KH*KW) over the images of chunk c, in image, row, column order.
// Pass 2 (`reduce`): output j = sum over chunks c = 0, 1, ... of partial[c][j].
// The chunking depends only on the shape, so a run is bit-for-bit reproducible.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, kh: u32, kw: u32, oh: u32,
    ow: u32, chunk: u32, chunks: u32, nout: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn partials(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let c = gid.y;
    if (j >= p.nout) { return; }
    let nw = p.cout * p.cin * p.kh * p.kw;
    let b0 = c * p.chunk;
    let b1 = min(p.batch, b0 + p.chunk);
    let plane = p.oh * p.ow;
    var acc = 0.0;
    if (j < nw) {
        let kx = j % p.kw;
        let ky = (j / p.kw) % p.kh;
        let ci = (j / (p.kw * p.kh)) % p.cin;
        let co = j / (p.kw * p.kh * p.cin);
        for (var b = b0; b < b1; b++) {
            let dbase = (b * p.cout + co) * plane;
            let xbase = ((b * p.cin + ci) * p.h + ky) * p.w + kx;
            for (var oy = 0u; oy < p.oh; oy++) {
                let drow = dbase + oy * p.ow;
                let xrow = xbase + oy * p.w;
                for (var ox = 0u; ox < p.ow; ox++) {
                    acc += dy[drow + ox] * x[xrow + ox];
                }
            }
        }
    } else {
        let co = j - nw;
        for (var b = b0; b < b1; b++) {
            let dbase = (b * p.cout + co) * plane;
            for (var i = 0u; i < plane; i++) {
                acc += dy[dbase + i];
            }
        }
    }
    partial[c * p.nout + j] = acc;
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.nout) { return; }
    var acc = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        acc += partial_in[c * p.nout + j];
    }
    let nw = p.cout * p.cin * p.kh * p.kw;
    if (j < nw) { dw[j] = acc; } else { db[j - nw] = acc; }
}
