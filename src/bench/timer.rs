//! Timing a list of dispatches for `bench-kernels`: GPU timestamps inside one pass where the
//! adapter has them, wall clock otherwise; the median, or the best repetition for ceilings.

use crate::gpu::Gpu;
use crate::kernels::Dispatch;
use std::time::Instant;

/// Times a list of dispatches: GPU timestamps around each repetition inside one pass when the
/// adapter allows, else wall clock over all repetitions. Returns the median in milliseconds, or
/// with `best` the fastest repetition (for the ceilings: what the adapter can do at best).
pub(super) struct Timer<'g> {
    pub gpu: &'g Gpu,
    pub timestamps: bool,
    pub reps: usize,
    pub best: bool,
}

impl Timer<'_> {
    fn pick(&self, v: &mut [f64]) -> f64 {
        if self.best {
            v.iter().copied().fold(f64::INFINITY, f64::min)
        } else {
            median(v)
        }
    }
}

impl Timer<'_> {
    pub fn time_ms(&self, dispatches: &[&Dispatch]) -> Result<f64, String> {
        let g = self.gpu;
        // Warm-up: the first dispatch of a pipeline compiles it on some drivers.
        crate::kernels::run_all(g, dispatches);
        g.wait_idle()?;
        if self.timestamps {
            let n = (2 * self.reps) as u32;
            let qs = g.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench"),
                ty: wgpu::QueryType::Timestamp,
                count: n,
            });
            let resolve = g.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps"),
                size: n as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = g.storage("bench timestamps copy", 2 * n as usize);
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for r in 0..self.reps as u32 {
                    pass.write_timestamp(&qs, 2 * r);
                    for d in dispatches {
                        d.record(&mut pass, 0);
                    }
                    pass.write_timestamp(&qs, 2 * r + 1);
                }
            }
            enc.resolve_query_set(&qs, 0..n, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, n as u64 * 8);
            g.queue.submit([enc.finish()]);
            let ticks: Vec<u64> = g
                .read_words::<u32>(&read, 0, 2 * n as usize)?
                .chunks_exact(2)
                .map(|w| w[0] as u64 | (w[1] as u64) << 32)
                .collect();
            let period = g.queue.get_timestamp_period() as f64;
            let mut ms: Vec<f64> =
                ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period / 1e6).collect();
            Ok(self.pick(&mut ms))
        } else {
            let mut ms = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let mut enc = g.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for _ in 0..self.reps {
                        for d in dispatches {
                            d.record(&mut pass, 0);
                        }
                    }
                }
                g.queue.submit([enc.finish()]);
                g.wait_idle()?;
                ms.push(t.elapsed().as_secs_f64() * 1e3 / self.reps as f64);
            }
            Ok(self.pick(&mut ms))
        }
    }
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
