//! CPU benchmark of the VAR transformer against the official PyTorch figures.
//!
//! `cargo bench --bench cpu` (or `scripts/bench.sh`). Reports the median of several runs of
//! the teacher-forced forward (B = 2) and of KV-cached CFG inference (B = 2, transformer and
//! sampling only, no VQ-VAE decode) for depths 2 and 4, and the ratio to the PyTorch CPU
//! times recorded with the golden vectors (1 thread). Set `RAYON_NUM_THREADS=1` for the
//! like-for-like single-thread comparison. `NEXTSCALE_PYTORCH_TF=2:0.031,4:0.12` replaces the
//! recorded teacher-forced times with ones measured in the same run at the same thread count
//! (`scripts/bench.sh --pytorch`, which runs `bench/pytorch_forward.py`).

use std::time::Instant;

use nextscale::burn::tensor::{Device, Int, Tensor, TensorData};
use nextscale::params::RandomInit;
use nextscale::readback::block_on;
use nextscale::sampler::{NoHooks, SampleOptions, generate};
use nextscale::{Checkpoint, Var, VarConfig, VqVae, VqVaeConfig};

/// PyTorch 2.15 CPU, 1 thread, official modules (golden README §4): (TF forward, AR inference).
const PYTORCH_1T: [(usize, f64, f64); 2] = [(2, 0.065, 0.54), (4, 0.26, 0.99)];

fn golden_dir() -> std::path::PathBuf {
    std::env::var_os("NEXTSCALE_GOLDEN_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/var-golden")
        })
}

fn load_var(depth: usize, device: &Device) -> (Var, &'static str) {
    let p = golden_dir().join(format!("var_d{depth}_random.safetensors"));
    if let Ok(ck) = Checkpoint::open(&p) {
        return (
            Var::from_checkpoint(ck, None, device).unwrap().0,
            "golden weights",
        );
    }
    // Same architecture; the timing does not depend on the values.
    let cfg = VarConfig::for_depth(depth);
    (
        Var::load(&mut RandomInit::new(depth as u64), &cfg, device).unwrap(),
        "random init",
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    f(); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let device = Device::flex();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let vae_cfg = VqVaeConfig::vae_ch160v4096z32();
    // Only the quantizer matters for inference; build the golden one (cheap parts only).
    let quant = {
        let parts = golden_dir().join("vqvae_quant_parts.safetensors");
        let mut ck = Checkpoint::open(&parts).expect("vqvae_quant_parts.safetensors");
        let mut s = nextscale::params::Scope::new(&mut ck, &device);
        nextscale::vqvae::VectorQuantizer::load(&mut s.pp("quantize"), &vae_cfg).unwrap()
    };
    let _ = VqVae::load; // (the decoder is not part of this benchmark)
    // Teacher-forced times measured beside this run, when given.
    let measured: Vec<(usize, f64)> = std::env::var("NEXTSCALE_PYTORCH_TF")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            let (d, t) = kv.split_once(':')?;
            Some((d.trim().parse().ok()?, t.trim().parse().ok()?))
        })
        .collect();
    println!(
        "| model | step | nextscale flex ({threads} threads) | PyTorch CPU | ratio (PyTorch / ours) |"
    );
    println!("|---|---|---|---|---|");
    for (depth, pt_tf, pt_ar) in PYTORCH_1T {
        let (pt_tf, tf_src) = match measured.iter().find(|&&(d, _)| d == depth) {
            Some(&(_, t)) => (t, "measured in this run, same threads"),
            None => (pt_tf, "recorded, 1 thread"),
        };
        let (var, src) = load_var(depth, &device);
        let labels: Tensor<1, Int> =
            Tensor::from_data(TensorData::new(vec![3i64, 1000], [2]), &device);
        let x: Tensor<3> = Tensor::zeros([2, 679, 32], &device);
        let tf = time(5, || {
            let l = var.forward_teacher(labels.clone(), x.clone(), None);
            let _ = l.into_data();
        });
        let opts = SampleOptions {
            cfg: 1.5,
            top_k: 900,
            top_p: 0.96,
            seed: 0,
            more_smooth: false,
        };
        let ar = time(3, || {
            block_on(generate(&var, &quant, &[3, 980], &opts, &mut NoHooks)).unwrap();
        });
        println!(
            "| d{depth} ({src}) | teacher-forced forward, B=2 | {tf:.3} s | {pt_tf:.3} s ({tf_src}) | {:.2} |",
            pt_tf / tf
        );
        println!(
            "| d{depth} ({src}) | CFG inference (k=900, p=0.96), B=2, no decode | {ar:.3} s | {pt_ar:.3} s (recorded, 1 thread) | {:.2} |",
            pt_ar / ar
        );
    }
}
