//! Weights kept quantized in memory: the dequantizing matmul against a plain f64 product of
//! the pack's own decoded values, and the golden VAR sampled with packed weights against the
//! same pack dequantized at load (tokens equal, logits within float rounding); the same on a
//! GPU device, where the codes live in device memory (`NEXTSCALE_TEST_GPU=1`, see `devices`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use nextscale::burn::tensor::Device;
use nextscale::device::{BackendKind, init_device};
use nextscale::pack::{self, Pack, Storage, write_pack};
use nextscale::quant::{DeviceMatrix, PackedMatrix};
use nextscale::readback::block_on;
use nextscale::rng::CounterRng;
use nextscale::sampler::SampleHooks;
use nextscale::{Pipeline, SampleOptions, Var, VqVaeConfig};
use support::{discover, golden, open};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let rng = CounterRng::new(seed);
    (0..n)
        .map(|i| {
            // Blocks of very different magnitude, as real weights have.
            let s = [0.02f32, 0.3, 1.5][(i / 32) % 3];
            rng.normal(0, i as u64) as f32 * s
        })
        .collect()
}

fn packed(values: &[f32], storage: Storage, rows: usize, cols: usize) -> PackedMatrix {
    let bytes = pack::encode(values, storage);
    let len = bytes.len();
    PackedMatrix::new(Arc::new(bytes), 0, len, storage, rows, cols).unwrap()
}

#[test]
fn dequantizing_matmul_matches_the_decoded_weights() {
    for storage in [Storage::Q8, Storage::Q4] {
        // Rows that are not a multiple of a tile, one row, wide and narrow inputs.
        for (rows, cols) in [(1, 32), (37, 64), (300, 96), (1000, 512), (9, 4096)] {
            let w = random(rows * cols, rows as u64 * 7 + cols as u64);
            let p = packed(&w, storage, rows, cols);
            let stored = pack::decode(&pack::encode(&w, storage), storage, rows * cols);
            assert_eq!(p.to_f32(), stored, "{storage:?} [{rows}, {cols}]: to_f32");
            for m in [0usize, 1, 5, 130] {
                let x = random(m * cols, 99 + m as u64);
                let y = p.matmul_t(&x, m);
                assert_eq!(y.len(), m * rows);
                for i in 0..m {
                    for j in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|k| x[i * cols + k] as f64 * stored[j * cols + k] as f64)
                            .sum();
                        let got = y[i * rows + j] as f64;
                        let norm: f64 = (0..cols)
                            .map(|k| (x[i * cols + k] as f64 * stored[j * cols + k] as f64).abs())
                            .sum();
                        assert!(
                            (got - want).abs() <= 1e-5 * norm + 1e-6,
                            "{storage:?} [{rows}, {cols}] m={m} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// The CPU device, and with `NEXTSCALE_TEST_GPU=1` a wgpu device as well (natively: Vulkan;
/// on a machine without a GPU, Mesa's lavapipe, `apt install mesa-vulkan-drivers`). CI leaves
/// it out: there the browser tests check the same path on WebGPU (SwiftShader). The adapter
/// is set up once per process (tests share it).
fn devices() -> Vec<Device> {
    static GPU: std::sync::OnceLock<Option<Device>> = std::sync::OnceLock::new();
    let wanted = std::env::var("NEXTSCALE_TEST_GPU").is_ok_and(|v| v == "1");
    let gpu = GPU.get_or_init(|| match wanted.then(|| init_device(BackendKind::Wgpu)) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("NEXTSCALE_TEST_GPU=1 but no wgpu device, only the CPU is checked: {e}");
            None
        }
    });
    std::iter::once(Device::flex()).chain(gpu.clone()).collect()
}

#[test]
fn device_matrices_dequantize_to_the_stored_values() {
    for device in devices() {
        for storage in [Storage::Q8, Storage::Q4] {
            for (rows, cols) in [(1, 32), (37, 64), (300, 96), (9, 4096)] {
                let mut w = random(rows * cols, rows as u64 * 3 + cols as u64);
                // The first block's largest magnitude is negative: code -127 / -7.
                w[0] = -w[1].abs().max(0.5);
                let mut bytes = pack::encode(&w, storage);
                if storage == Storage::Q4 {
                    // Code -8 (nibble 0) in the first byte's low half, as GPTQ may choose.
                    let blocks = rows * cols / 32;
                    bytes[2 * blocks] &= 0xf0;
                }
                let len = bytes.len();
                let p = PackedMatrix::new(Arc::new(bytes), 0, len, storage, rows, cols).unwrap();
                let d = DeviceMatrix::upload(&p, &device);
                let got = d
                    .dequantize()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap();
                let want = p.to_f32();
                assert_eq!(got.len(), want.len());
                let bad = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(
                    bad.is_none(),
                    "{device:?} {storage:?} [{rows}, {cols}]: value {bad:?} differs"
                );
                let codes = if storage == Storage::Q8 { 1 } else { 2 };
                assert_eq!(d.byte_len(), rows * cols / codes + rows * cols / 32 * 4);
            }
        }
    }
}

#[test]
fn bad_packed_matrices_are_refused() {
    let w = random(64 * 48, 1);
    let bytes = Arc::new(pack::encode(&w, Storage::Q8));
    let len = bytes.len();
    // Blocks straddling rows.
    let e = PackedMatrix::new(bytes.clone(), 0, len, Storage::Q8, 64, 48).unwrap_err();
    assert!(e.to_string().contains("multiple of 32"), "{e}");
    // A length that does not match the shape, or runs past the buffer.
    let w = random(64 * 32, 1);
    let bytes = Arc::new(pack::encode(&w, Storage::Q8));
    let len = bytes.len();
    assert!(PackedMatrix::new(bytes.clone(), 0, len - 1, Storage::Q8, 64, 32).is_err());
    assert!(PackedMatrix::new(bytes.clone(), 1, len, Storage::Q8, 64, 32).is_err());
    assert!(PackedMatrix::new(bytes.clone(), usize::MAX, len, Storage::Q8, 64, 32).is_err());
    assert!(PackedMatrix::new(bytes.clone(), 0, len, Storage::F16, 64, 32).is_err());
    // A non-finite scale (f16 infinity) is a format error, not a model that samples garbage.
    let mut raw = (*bytes).clone();
    raw[2..4].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    let e = PackedMatrix::new(Arc::new(raw), 0, len, Storage::Q8, 64, 32).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
}

/// The golden VAR's tensors as a pack (VAR only: the test builds the VAR from it directly).
fn golden_var_pack(depth: usize, storage: Storage) -> (Vec<u8>, nextscale::VarConfig) {
    let mut ck = open(&support::golden_dir().join(format!("var_d{depth}_random.safetensors")));
    let cfg = nextscale::var::infer_config(&ck, None).unwrap();
    // Buffers the model recomputes (`lvl_1L`, `attn_bias_for_masking`) stay out of the pack.
    let names: Vec<String> = ck
        .keys()
        .filter(|k| !["lvl_1L", "attn_bias_for_masking"].contains(k))
        .map(str::to_string)
        .collect();
    let tensors: Vec<_> = names
        .into_iter()
        .map(|k| {
            let shape = ck.shape(&k).unwrap().to_vec();
            let v = ck.take_f32(&k, &shape).unwrap();
            let st = if shape.len() >= 2 {
                storage
            } else {
                Storage::F32
            };
            (k, shape, v, st)
        })
        .collect();
    let bytes = write_pack(
        &cfg,
        &VqVaeConfig::vae_ch160v4096z32(),
        None,
        BTreeMap::new(),
        &tensors,
    )
    .unwrap();
    (bytes, cfg)
}

#[derive(Default)]
struct Logits(Vec<Vec<f32>>);
impl SampleHooks for Logits {
    fn logits(&mut self, _si: usize, l: &[f32], _shape: [usize; 3]) {
        self.0.push(l.to_vec());
    }
}

#[test]
fn golden_var_with_packed_weights_samples_the_same_tokens() {
    let depths: Vec<usize> = discover("var_d", "_random.safetensors")
        .iter()
        .map(|p| support::depth_of(p))
        .collect();
    assert!(!depths.is_empty(), "no var_d*_random.safetensors");
    for d in devices() {
        for depth in depths.iter().copied() {
            for storage in [Storage::Q8, Storage::Q4] {
                let (bytes, cfg) = golden_var_pack(depth, storage);
                let load = |keep: bool| -> Var {
                    let mut p = Pack::from_bytes(bytes.clone()).unwrap();
                    p.keep_packed(keep);
                    Var::load(&mut p.source(""), &cfg, &d).unwrap()
                };
                let dense = load(false);
                let packed = load(true);
                assert!(!dense.blocks[0].attn.mat_qkv.is_packed());
                assert!(packed.blocks[0].attn.mat_qkv.is_packed());
                assert!(packed.blocks[0].ffn.fc2.is_packed() && packed.head.is_packed());
                let mut pipe = Pipeline::from_checkpoints(
                    open(&support::golden_dir().join(format!("var_d{depth}_random.safetensors"))),
                    Some(golden("vqvae_quant_parts.safetensors")),
                    &d,
                )
                .unwrap();
                for (cfg_scale, top_k, seed) in [(4.0, 1, 0), (1.5, 600, 3), (3.0, 50, 11)] {
                    let o = SampleOptions {
                        cfg: cfg_scale,
                        top_k,
                        top_p: 0.95,
                        seed,
                        more_smooth: false,
                    };
                    let mut run = |var: &Var| {
                        pipe.set_var(var.clone());
                        let mut h = Logits::default();
                        let g = block_on(pipe.generate(&[3, 980], &o, &mut h)).unwrap();
                        (g.tokens, h.0)
                    };
                    let (t_dense, l_dense) = run(&dense);
                    let (t_packed, l_packed) = run(&packed);
                    assert_eq!(
                        t_packed, t_dense,
                        "{d:?} d{depth} {storage:?} cfg {cfg_scale} top-k {top_k}: tokens"
                    );
                    for (si, (a, b)) in l_packed.iter().zip(&l_dense).enumerate() {
                        let (max_abs, _) = support::diff(a, b);
                        assert!(
                            max_abs < 1e-3,
                            "{d:?} d{depth} {storage:?} scale {si}: logits differ by {max_abs}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn pipelines_keep_pack_weights_packed_on_every_device() {
    let (var, vae) = nextscale::fixtures::tiny_configs();
    let tensors: Vec<_> = nextscale::fixtures::tiny_model_tensors(0)
        .unwrap()
        .into_iter()
        .filter_map(nextscale::state_dict::Entry::into_f32)
        .map(|(k, s, v)| {
            let st = if s.len() >= 2 {
                Storage::Q4
            } else {
                Storage::F32
            };
            (k, s, v, st)
        })
        .collect();
    let bytes = write_pack(&var, &vae, None, BTreeMap::new(), &tensors).unwrap();
    for d in devices() {
        let packed = Pipeline::from_bytes(bytes.clone(), &d).unwrap();
        assert!(packed.var().blocks[0].ffn.fc1.is_packed());
        let mut p = Pack::from_bytes(bytes.clone()).unwrap();
        p.keep_packed(false);
        let dense = Pipeline::from_pack(p, &d).unwrap();
        assert!(!dense.var().blocks[0].ffn.fc1.is_packed());
        let o = SampleOptions {
            cfg: 3.0,
            top_k: 40,
            top_p: 0.9,
            seed: 5,
            more_smooth: false,
        };
        let a = block_on(packed.generate(&[1, 7], &o, &mut nextscale::sampler::NoHooks)).unwrap();
        let b = block_on(dense.generate(&[1, 7], &o, &mut nextscale::sampler::NoHooks)).unwrap();
        assert_eq!(a.tokens, b.tokens, "{d:?}");
        // Images too: the VQ-VAE's convolutions are packed and dequantized per call.
        let ia = block_on(packed.decode(&a)).unwrap();
        let ib = block_on(dense.decode(&b)).unwrap();
        assert_eq!(ia[0].data, ib[0].data, "{d:?}");
    }
}

/// The traced teacher-forced forward (what `export --var-calibration` fits quantized weights
/// to) gives the same logits as the plain one, and shows the input of every linear layer after
/// the embedding under its state-dict name, with the layer's input width. Each traced input is
/// what its layer takes: the head on its traced input gives the logits, `fc1` on its input
/// (after GELU) gives `fc2`'s, and `ada_lin` on its input gives the block's modulations.
#[test]
fn traced_teacher_forward_shows_every_layer_input() {
    use nextscale::burn::tensor::{Distribution, Int, Tensor};
    let dev = Device::flex();
    let (cfg, _) = nextscale::fixtures::tiny_configs();
    let var = Var::load(&mut nextscale::params::RandomInit::new(5), &cfg, &dev).unwrap();
    let labels = Tensor::<1, Int>::from_ints([1, 4], &dev);
    let x = Tensor::<3>::random(
        [2, var.sequence_len() - 1, cfg.cvae],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let cond = var.class_embedding(labels.clone());
    let mut seen = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    let mut residuals = 0;
    let traced = var.forward_teacher_traced(cond.clone(), x.clone(), &mut |name, t| {
        if name == nextscale::var::RESIDUAL {
            residuals += 1;
        } else {
            assert!(
                seen.insert(name.to_string(), t.dims()).is_none(),
                "{name} twice"
            );
            inputs.insert(name.to_string(), t.clone());
        }
    });
    let host = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap();
    let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{what}: max difference {worst}");
    };
    close(
        host(var.head.forward(inputs["head"].clone())),
        host(traced.clone()),
        "head(traced input) = logits",
    );
    let b1 = &var.blocks[1];
    close(
        host(nextscale::nn::gelu_tanh(
            b1.ffn.fc1.forward(inputs["blocks.1.ffn.fc1"].clone()),
        )),
        host(inputs["blocks.1.ffn.fc2"].clone()),
        "GELU(fc1(its input)) = fc2's input",
    );
    let m = b1.modulation(cond);
    let ada = b1.ada_lin.forward(inputs["blocks.1.ada_lin.1"].clone()); // [B, 1, 6C]
    let c = cfg.embed_dim;
    close(
        host(ada.slice([0..2, 0..1, 2 * c..3 * c])),
        host(m.scale1),
        "ada_lin(its input) = the modulations",
    );
    let plain = var.forward_teacher(labels, x, None);
    assert_eq!(
        traced.into_data().try_into_vec::<f32>().unwrap(),
        plain.into_data().try_into_vec::<f32>().unwrap()
    );
    assert_eq!(residuals, cfg.depth + 1);
    let sd = nextscale::state_dict::parameters(&var).unwrap();
    let mut linears: Vec<String> = sd
        .iter()
        .filter(|e| e.shape.len() == 2 && e.name.ends_with(".weight"))
        .map(|e| e.name.trim_end_matches(".weight").to_string())
        // Looked up or fed the latent, not traced.
        .filter(|n| !["word_embed", "class_emb", "lvl_embed"].contains(&n.as_str()))
        .collect();
    linears.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), linears);
    for e in sd
        .iter()
        .filter(|e| seen.contains_key(e.name.trim_end_matches(".weight")))
    {
        let [_, l, c] = seen[e.name.trim_end_matches(".weight")];
        assert_eq!(c, e.shape[1], "{}", e.name);
        let full = l == var.sequence_len();
        assert!(
            full || (l == 1 && e.name.contains("ada_lin")),
            "{} sees {l} rows",
            e.name
        );
    }
}
