//! Parity with the official VAR implementation, against the golden vectors made by running
//! the official code (see `../shared/var-golden/README.md`). Every golden file present is
//! discovered by pattern and checked; `NEXTSCALE_GOLDEN_DIR` points elsewhere.
//!
//! Run alone: `cargo test --release --test parity -- --nocapture`.

mod support;

use std::collections::BTreeSet;

use nextscale::burn::tensor::{Device, Int, Tensor};
use nextscale::fixtures::GoldenVqVaeSource;
use nextscale::readback::block_on;
use nextscale::sampler::{SampleHooks, SampleOptions, ScaleEvent};
use nextscale::var::Var;
use nextscale::{Pipeline, Result, VqVae, VqVaeConfig};
use support::*;

const P256: [usize; 10] = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16];

fn device() -> Device {
    Device::flex()
}

#[test]
fn golden_vqvae_generator_matches_fingerprint() {
    let fp = golden("vqvae_weights_fingerprint.safetensors");
    let mut src = GoldenVqVaeSource::recording();
    VqVae::load(&mut src, &VqVaeConfig::vae_ch160v4096z32(), &device()).unwrap();
    let rec = src.record.unwrap();
    let fp_keys: BTreeSet<String> = fp
        .keys()
        .filter_map(|k| k.strip_suffix("/sum_f64").map(str::to_string))
        .collect();
    let our_keys: BTreeSet<String> = rec.iter().map(|e| e.name.clone()).collect();
    assert_eq!(
        fp_keys.len(),
        324,
        "the official VQ-VAE has 324 state-dict entries"
    );
    assert_eq!(
        our_keys, fp_keys,
        "the model's tensor names differ from the official state dict"
    );
    let mut params = 0usize;
    for (key, v) in rec.iter().map(|e| (&e.name, e.f32_values().unwrap())) {
        let first = f32s(&fp, &format!("{key}/first8")).1;
        let last = f32s(&fp, &format!("{key}/last8")).1;
        assert_eq!(&v[..first.len()], &first[..], "{key}: first values");
        assert_eq!(&v[v.len() - last.len()..], &last[..], "{key}: last values");
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let abs: f64 = v.iter().map(|&x| (x as f64).abs()).sum();
        for (what, ours, want) in [
            (
                "sum",
                sum,
                fp.read_f64(&format!("{key}/sum_f64")).unwrap()[0],
            ),
            (
                "abssum",
                abs,
                fp.read_f64(&format!("{key}/abssum_f64")).unwrap()[0],
            ),
        ] {
            let tol = 1e-12 * want.abs().max(1.0) + 1e-9;
            assert!((ours - want).abs() <= tol, "{key}: {what} {ours} vs {want}");
        }
        if key != "quantize.ema_vocab_hit_SV" {
            params += v.len();
        }
    }
    assert_eq!(params, 108_948_355, "official parameter count");
    println!(
        "{} tensors, {params} parameters match the fingerprint",
        rec.len()
    );
}

#[test]
fn quantizer_parts_are_the_generated_weights() {
    let parts = golden("vqvae_quant_parts.safetensors");
    let mut src = GoldenVqVaeSource::new();
    let mut n = 0;
    for key in parts.keys() {
        let (shape, want) = f32s(&parts, key);
        if key.ends_with(".bias") {
            continue; // generated after their weight below
        }
        assert_eq!(src.generate(key, &shape), want, "{key}");
        let bias = key.replace(".weight", ".bias");
        if parts.contains(&bias) && bias != key {
            let (bs, bw) = f32s(&parts, &bias);
            assert_eq!(src.generate(&bias, &bs), bw, "{bias}");
            n += 1;
        }
        n += 1;
    }
    assert_eq!(n, 14);
}

#[test]
fn area_and_bicubic_match_torch_interpolate() {
    let g = golden("interp_unit.safetensors");
    let d = device();
    let x16: Tensor<4> = float_tensor(&g, "x16", &d);
    for p in P256 {
        if p == 16 {
            continue;
        }
        let got = host(nextscale::resample::area(x16.clone(), p));
        assert_close(
            &format!("area 16→{p}"),
            &got,
            &f32s(&g, &format!("area_16_to_{p}")).1,
            1e-6,
        );
        let inp: Tensor<4> = float_tensor(&g, &format!("bicubic_in_{p}"), &d);
        let got = host(nextscale::resample::bicubic(inp, 16));
        assert_close(
            &format!("bicubic {p}→16"),
            &got,
            &f32s(&g, &format!("bicubic_{p}_to_16")).1,
            2e-6,
        );
    }
}

#[test]
fn vqvae_encode_quantize_decode() {
    let io = golden("vqvae_io.safetensors");
    let d = device();
    let vae = VqVae::load(
        &mut GoldenVqVaeSource::new(),
        &VqVaeConfig::vae_ch160v4096z32(),
        &d,
    )
    .unwrap();
    let q = &vae.quantize;

    // Quantizer alone, from the official f: indices exact at all scales, f̂ ≤ 1e-4.
    let f_ref: Tensor<4> = float_tensor(&io, "f", &d);
    let (idx, fhat) = q.f_to_idx(f_ref);
    for (si, (i, fh)) in idx.iter().zip(&fhat).enumerate() {
        assert_exact(
            &format!("VQ indices s{si} (official f)"),
            &host_i64(i.clone()),
            &i64s(&io, &format!("idx_s{si}")).1,
        );
        assert_close(
            &format!("f_hat s{si}"),
            &host(fh.clone()),
            &f32s(&io, &format!("fhat_s{si}")).1,
            1e-4,
        );
    }

    // Teacher-forcing input from the official indices.
    let gt: Vec<Tensor<2, Int>> = (0..10)
        .map(|si| int_tensor(&io, &format!("idx_s{si}"), &d))
        .collect();
    let x = q.idx_to_var_input(&gt);
    assert_eq!(x.dims(), [2, 679, 32]);
    assert_close(
        "x_BLCv_wo_first_l",
        &host(x),
        &f32s(&io, "x_BLCv_wo_first_l").1,
        1e-4,
    );
    assert_close(
        "idx → f_hat",
        &host(q.idx_to_fhat(&gt)),
        &f32s(&io, "fhat_s9").1,
        1e-4,
    );

    // Encoder on the image, then the whole image → indices path.
    let img: Tensor<4> = float_tensor(&io, "img", &d);
    let enc = vae.encoder.forward(img);
    assert_close(
        "encoder output",
        &host(enc.clone()),
        &f32s(&io, "enc_out").1,
        1e-4,
    );
    let f = vae.quant_conv.forward(enc);
    assert_close(
        "f = quant_conv(enc)",
        &host(f.clone()),
        &f32s(&io, "f").1,
        1e-4,
    );
    let (idx, _) = q.f_to_idx(f);
    let flat: Vec<i64> = idx.into_iter().flat_map(host_i64).collect::<Vec<_>>();
    let mut ours = vec![0i64; 1360];
    // Reorder [scale][b][n] → [b][680].
    let mut off = 0;
    let mut begin = 0;
    for p in P256 {
        let n = p * p;
        for b in 0..2 {
            ours[b * 680 + begin..b * 680 + begin + n]
                .copy_from_slice(&flat[off + b * n..off + (b + 1) * n]);
        }
        off += 2 * n;
        begin += n;
    }
    assert_exact("image → indices (gt_BL)", &ours, &i64s(&io, "gt_BL").1);

    // Decoder from the official f̂.
    let fh: Tensor<4> = float_tensor(&io, "fhat_s9", &d);
    let dec = vae.decode_unclamped(fh);
    let (max, mean) = diff(&host(dec.clone()), &f32s(&io, "dec_out_unclamped").1);
    println!("decoder output: max-abs {max:.3e}, mean-abs {mean:.3e}");
    assert!(
        max <= 2e-3 && mean <= 1e-5,
        "decoder output: max {max:e}, mean {mean:e}"
    );
    assert_close(
        "reconstruction (clamped)",
        &host(dec.clamp(-1.0, 1.0)),
        &f32s(&io, "rec_img").1,
        2e-3,
    );
}

#[test]
fn var_pth_and_safetensors_hold_the_same_weights() {
    let pths = discover("var_d", "_random.pth");
    assert!(
        !pths.is_empty(),
        "no var_d*_random.pth in the golden folder"
    );
    for pth in pths {
        let st = pth.with_extension("safetensors");
        let (a, b) = (open(&pth), open(&st));
        let ka: Vec<&str> = a.keys().collect();
        assert_eq!(
            ka,
            b.keys().collect::<Vec<_>>(),
            "{}: key sets differ",
            pth.display()
        );
        for k in ka {
            if k == "lvl_1L" {
                assert_eq!(i64s(&a, k), i64s(&b, k), "{k}");
            } else {
                assert_eq!(f32s(&a, k), f32s(&b, k), "{k}");
            }
        }
        // And the .pth loads as a model with every key used.
        let (_, cfg) = Var::from_checkpoint(open(&pth), None, &device()).unwrap();
        assert_eq!(cfg.depth, depth_of(&pth));
        println!(
            "{}: {} keys identical to the safetensors, loads strictly",
            pth.display(),
            b.keys().count()
        );
    }
}

fn load_var(depth: usize) -> (Var, nextscale::VarConfig) {
    let path = golden_dir().join(format!("var_d{depth}_random.safetensors"));
    let (var, cfg) = Var::from_checkpoint(open(&path), None, &device()).unwrap();
    assert_eq!(
        cfg.num_params(),
        nextscale::VarConfig::for_depth(depth).num_params()
    );
    (var, cfg)
}

#[test]
fn var_teacher_forced_logits() {
    let files = discover("var_d", "_teacher_forced.safetensors");
    assert!(!files.is_empty(), "no var_d*_teacher_forced.safetensors");
    let d = device();
    for path in files {
        let depth = depth_of(&path);
        let (var, _) = load_var(depth);
        let tf = open(&path);
        let labels: Tensor<1, Int> = int_tensor(&tf, "label_B", &d);
        assert_close(
            &format!("d{depth} cond_BD"),
            &host(var.class_embedding(labels.clone())),
            &f32s(&tf, "cond_BD").1,
            1e-6,
        );
        let x: Tensor<3> = float_tensor(&tf, "x_BLCv_wo_first_l", &d);
        let mut hidden = Vec::new();
        let logits = var.forward_teacher(labels, x, Some(&mut hidden));
        assert_close(
            &format!("d{depth} h_before_block0"),
            &host(hidden[0].clone()),
            &f32s(&tf, "h_before_block0").1,
            1e-5,
        );
        for i in 0..depth {
            assert_close(
                &format!("d{depth} h_after_block{i}"),
                &host(hidden[i + 1].clone()),
                &f32s(&tf, &format!("h_after_block{i}")).1,
                5e-4,
            );
        }
        assert_close(
            &format!("d{depth} teacher-forced logits"),
            &host(logits),
            &f32s(&tf, "logits_BLV").1,
            5e-4,
        );
    }
}

/// Records what the sampler computes; optionally replays recorded tokens.
struct Recorder {
    logits: Vec<(Vec<f32>, [usize; 3])>,
    fhat: Vec<Vec<f32>>,
    forced: Option<Vec<Vec<Vec<u32>>>>,
}

impl SampleHooks for Recorder {
    fn logits(&mut self, _si: usize, l: &[f32], shape: [usize; 3]) {
        self.logits.push((l.to_vec(), shape));
    }
    fn forced_tokens(&mut self, si: usize) -> Option<Vec<Vec<u32>>> {
        self.forced.as_ref().map(|f| f[si].clone())
    }
    fn scale_done(&mut self, e: &ScaleEvent<'_>) -> Result<()> {
        self.fhat.push(host(e.f_hat.clone()));
        Ok(())
    }
}

fn tokens_of(ck: &nextscale::Checkpoint, si: usize) -> Vec<Vec<u32>> {
    let (shape, v) = i64s(ck, &format!("idx_s{si}"));
    v.chunks(shape[1])
        .map(|r| r.iter().map(|&t| t as u32).collect())
        .collect()
}

#[test]
fn var_inference_matches_official_runs() {
    let files = discover("var_d", ".safetensors");
    let files: Vec<_> = files
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains("_infer_"))
        .collect();
    assert!(!files.is_empty(), "no var_d*_infer_*.safetensors");
    let d = device();
    for path in files {
        let depth = depth_of(&path);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let meta = metadata(&path);
        let opts = SampleOptions {
            cfg: meta["cfg"].parse().unwrap(),
            top_k: meta["top_k"].parse().unwrap(),
            top_p: meta["top_p"].parse().unwrap(),
            seed: meta["g_seed"].parse().unwrap(),
            more_smooth: meta["more_smooth"] == "True",
        };
        let greedy = opts.top_k == 1;
        let run = open(&path);
        let pipe = Pipeline::from_checkpoints(
            open(&golden_dir().join(format!("var_d{depth}_random.safetensors"))),
            Some(golden("vqvae_quant_parts.safetensors")),
            &d,
        )
        .unwrap();
        let labels: Vec<usize> = i64s(&run, "label_B")
            .1
            .iter()
            .map(|&l| l as usize)
            .collect();
        let mut rec = Recorder {
            logits: vec![],
            fhat: vec![],
            // Greedy runs are reproduced from scratch; sampled runs replay the recorded tokens.
            forced: (!greedy).then(|| (0..10).map(|si| tokens_of(&run, si)).collect()),
        };
        let g = block_on(pipe.generate(&labels, &opts, &mut rec)).unwrap();
        let all: Vec<i64> = g.tokens.iter().flatten().map(|&t| t as i64).collect();
        assert_exact(&format!("{name}: tokens"), &all, &i64s(&run, "idx_BL").1);
        for (si, (l, [b, n, v])) in rec.logits.iter().enumerate() {
            let key = format!("logits_cfg_s{si}");
            if run.contains(&key) {
                assert_close(&format!("{name}: {key}"), l, &f32s(&run, &key).1, 5e-4);
            }
            // top-16 values and logsumexp at every scale.
            let mut top = Vec::new();
            let mut lse = Vec::new();
            for r in 0..b * n {
                let row = &l[r * v..(r + 1) * v];
                let mut s = row.to_vec();
                s.sort_by(|a, b| b.total_cmp(a));
                top.extend_from_slice(&s[..16]);
                let m = s[0] as f64;
                lse.push((m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()) as f32);
            }
            assert_close(
                &format!("{name}: top16 s{si}"),
                &top,
                &f32s(&run, &format!("top16_val_s{si}")).1,
                5e-4,
            );
            assert_close(
                &format!("{name}: logsumexp s{si}"),
                &lse,
                &f32s(&run, &format!("logsumexp_s{si}")).1,
                5e-4,
            );
            assert_close(
                &format!("{name}: f_hat after s{si}"),
                &rec.fhat[si],
                &f32s(&run, &format!("fhat_after_s{si}")).1,
                1e-4,
            );
        }
        assert_eq!(rec.logits.len(), 10);
    }
}
