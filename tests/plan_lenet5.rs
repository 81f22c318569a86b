//! The schedule planned from LeNet-5's description against the hand-written one: the same
//! stages, dispatches and workgroups, and bit-identical weights after training steps.

mod common;
use common::*;

use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
use gpu_lenet::kernels::{StepTable, View};
use gpu_lenet::model::{self, kernels::NetKernels, net::Net, schedule, Lenet, LenetKernels, Schedule};

#[test]
fn the_planned_lenet5_schedule_is_the_hand_written_one() {
    let g = gpu();
    for (cin, batch) in [(3usize, 64usize), (3, 7), (1, 16)] {
        let (ko, kn) = (LenetKernels::new(g, cin), NetKernels::new(g, &gpu_lenet::nn::lenet5(cin)));
        let (no, nn_) = (Lenet::new(g, cin), Net::new(g, gpu_lenet::nn::lenet5(cin)));
        assert_eq!(no.arena, nn_.arena);
        let steps = 3;
        let table = StepTable::sequential(g, steps, batch);
        let (m1, m2) = (g.storage("m", steps * METRICS_WORDS), g.storage("m", steps * METRICS_WORDS));
        let (p1, p2) = (g.storage("p", steps * batch), g.storage("p", steps * batch));
        let old = Schedule::new(g, &ko, &no, batch, &table, &View::whole(&m1), &View::whole(&p1), 0.05, 0.9);
        let new = schedule::Schedule::new(g, &kn, &nn_, batch, &table, &View::whole(&m2), &View::whole(&p2), 0.05, 0.9);
        let fp_old: Vec<String> = old
            .forward
            .iter()
            .chain(&old.backward)
            .flat_map(|s| s.dispatches.iter().map(move |d| format!("{} {} {:?}", s.name, d.name, d.workgroups)))
            .collect();
        let fp_new: Vec<String> = new
            .forward
            .iter()
            .chain(&new.backward)
            .flat_map(|s| s.dispatches.iter().map(move |d| format!("{} {} {:?}", s.name, d.name, d.workgroups)))
            .collect();
        assert_eq!(fp_new, fp_old, "cin {cin} batch {batch}");
        let mut r = Rng(cin as u64 * 100 + batch as u64);
        let w: Vec<f32> = (0..no.arena.words).map(|_| r.uniform(-0.2, 0.2)).collect();
        no.upload(g, &w, None);
        nn_.upload(g, &w, None);
        for step in 0..steps {
            let x = r.vec(batch * cin * 32 * 32, -1.0, 1.0);
            let labels: Vec<u32> = (0..batch).map(|_| r.below(10)).collect();
            for (xb, lb) in [(&old.acts.x, &old.acts.labels), (&new.acts.x, &new.acts.labels)] {
                g.queue.write_buffer(xb, 0, bytemuck::cast_slice(&x));
                g.queue.write_buffer(lb, 0, bytemuck::cast_slice(&labels));
            }
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                old.record_train_step(&mut pass, table.offset(step));
                new.record_train_step(&mut pass, table.offset(step));
            }
            g.queue.submit([enc.finish()]);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(nn_.download_weights(g).unwrap()), bits(no.download_weights(g).unwrap()), "step {step}");
            assert_eq!(bits(read(&m2)), bits(read(&m1)));
        }
        let _ = model::CLASSES;
    }
}
