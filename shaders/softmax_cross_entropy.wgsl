// softmax_cross_entropy: the batch-mean cross-entropy of logits [B, C] against labels [B],
// with PyTorch's label smoothing SMOOTHING = e (target (1 - e) onehot + e / C; 0: plain).
// Writes the logit grads (softmax - target) / B and, into row `step` of the metrics buffer,
// [summed loss, correct count, batch size, non-finite flag], and each row's predicted class
// (first maximum) at preds[start + row], for per-class accuracy at the end of an evaluation. Stable: every exp is of
// (logit - row max) <= 0. One workgroup; rows are strided over its 64 lanes and the per-lane
// sums are reduced in a fixed tree order, so the metrics are reproducible bit for bit.

struct Params { batch: u32, classes: u32, _p0: u32, _p1: u32 }
struct Step { step: u32, start: u32, lr: f32, momentum: f32, epoch: u32, _p0: u32, _p1: u32, _p2: u32 }

override SMOOTHING: f32 = 0.0;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(6) var<storage, read_write> preds: array<u32>;

var<workgroup> red_loss: array<f32, 64>;
var<workgroup> red_correct: array<u32, 64>;
var<workgroup> red_bad: array<u32, 64>;

fn non_finite(v: f32) -> bool {
    // Exponent all ones: inf or NaN. Bit test, immune to fast-math folding of v != v.
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32) {
    var loss = 0.0;
    var correct = 0u;
    var bad = 0u;
    let inv_b = 1.0 / f32(p.batch);
    for (var r = lid; r < p.batch; r += 64u) {
        let base = r * p.classes;
        var mx = logits[base];
        var arg = 0u;
        for (var c = 1u; c < p.classes; c++) {
            let l = logits[base + c];
            if (l > mx) { mx = l; arg = c; }
        }
        var s = 0.0;
        for (var c = 0u; c < p.classes; c++) {
            s += exp(logits[base + c] - mx);
        }
        let label = labels[r];
        var row_loss = log(s) - (logits[base + label] - mx);
        if (SMOOTHING != 0.0) {
            // e / C * sum_k -log p_k = e / C * (C log s - sum_k (l_k - mx)).
            var shifted = 0.0;
            for (var c = 0u; c < p.classes; c++) { shifted += logits[base + c] - mx; }
            let all = f32(p.classes) * log(s) - shifted;
            row_loss = (1.0 - SMOOTHING) * row_loss + SMOOTHING / f32(p.classes) * all;
        }
        loss += row_loss;
        if (arg == label) { correct += 1u; }
        preds[st.start + r] = arg;
        if (non_finite(row_loss) || non_finite(mx)) { bad = 1u; }
        let inv_s = 1.0 / s;
        for (var c = 0u; c < p.classes; c++) {
            var g = exp(logits[base + c] - mx) * inv_s;
            if (SMOOTHING != 0.0) { g -= SMOOTHING / f32(p.classes); }
            if (c == label) { g -= 1.0 - SMOOTHING; }
            dlogits[base + c] = g * inv_b;
        }
    }
    red_loss[lid] = loss;
    red_correct[lid] = correct;
    red_bad[lid] = bad;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if (lid < half) {
            red_loss[lid] += red_loss[lid + half];
            red_correct[lid] += red_correct[lid + half];
            red_bad[lid] = max(red_bad[lid], red_bad[lid + half]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let m = st.step * 4u;
        metrics[m] = red_loss[0];
        metrics[m + 1u] = f32(red_correct[0]);
        metrics[m + 2u] = f32(p.batch);
        metrics[m + 3u] = f32(red_bad[0]);
    }
}
