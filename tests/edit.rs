//! Zero-shot editing against the official algorithm: `tests/reference/edit_d2.safetensors` was
//! written by `scripts/make-edit-reference.py`, which runs the masked sampling loop of the
//! official `demo_zero_shot_edit` with the official VAR modules on the golden d2 weights and
//! the procedural official VQ-VAE. Greedy edits are reproduced from scratch; the sampled one
//! replays the official draws, so the mixing, f̂ and the KV cache are checked exactly.

mod support;

use nextscale::burn::tensor::Device;
use nextscale::edit::{EditPlan, Half, Region, scale_masks};
use nextscale::fixtures::GoldenVqVaeSource;
use nextscale::image::RgbaView;
use nextscale::readback::block_on;
use nextscale::sampler::{SampleHooks, SampleOptions, ScaleEvent};
use nextscale::{Checkpoint, Condition, Pipeline, Result, Var, VqVae, VqVaeConfig};
use support::*;

fn reference() -> Checkpoint {
    open(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/reference/edit_d2.safetensors"),
    )
}

fn golden_pipeline() -> Pipeline {
    let d = Device::flex();
    let (var, var_config) = Var::from_checkpoint(
        open(&golden_dir().join("var_d2_random.safetensors")),
        None,
        &d,
    )
    .unwrap();
    let vae_config = VqVaeConfig::vae_ch160v4096z32();
    let vae = VqVae::load(&mut GoldenVqVaeSource::new(), &vae_config, &d).unwrap();
    Pipeline::new(var, var_config, vae, vae_config).unwrap()
}

struct Replay {
    drawn: Option<Vec<Vec<Vec<u32>>>>,
    tokens: Vec<Vec<Vec<u32>>>,
}

impl SampleHooks for Replay {
    fn forced_tokens(&mut self, si: usize) -> Option<Vec<Vec<u32>>> {
        self.drawn.as_ref().map(|d| d[si].clone())
    }
    fn scale_done(&mut self, e: &ScaleEvent<'_>) -> Result<()> {
        self.tokens.push(e.tokens.to_vec());
        Ok(())
    }
}

fn rows(ck: &Checkpoint, key: &str) -> Vec<Vec<u32>> {
    let (shape, v) = i64s(ck, key);
    let n = *shape.last().unwrap();
    v.chunks(n)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect()
}

#[test]
fn edits_match_the_official_algorithm() {
    let r = reference();
    let pipe = golden_pipeline();
    let pn = pipe.var_config().patch_nums.clone();
    let source: Vec<Vec<u32>> = (0..pn.num_scales())
        .map(|si| rows(&r, &format!("source.{si}")).remove(0))
        .collect();

    // The source image through this library's encoder gives the official tokens.
    // The script's test card: r = x, g = y, a 32-px checkerboard in blue.
    let rgba: Vec<u8> = (0..256 * 256)
        .flat_map(|i| {
            let (y, x) = (i / 256, i % 256);
            let b = ((x / 32 + y / 32) % 2 * 200 + 27) as u8;
            [x as u8, y as u8, b, 255]
        })
        .collect();
    let ours = block_on(pipe.encode_rgba(&RgbaView::new(256, 256, &rgba).unwrap())).unwrap();
    let differ: usize = ours
        .iter()
        .zip(&source)
        .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count())
        .sum();
    assert_eq!(
        differ, 0,
        "source tokens differ from the official img_to_idxBl"
    );

    for case in ["inpaint", "outpaint", "half"] {
        let (_, mask) = f32s(&r, &format!("{case}.mask"));
        let keep: Vec<bool> = mask.iter().map(|&m| m > 0.5).collect();
        let masks = scale_masks(&Region::Mask(keep), &pn).unwrap();
        let settings = r.read_f64(&format!("{case}.settings")).unwrap();
        let opts = SampleOptions {
            cfg: settings[0] as f32,
            top_k: settings[1] as usize,
            top_p: settings[2] as f32,
            seed: settings[3] as u64,
            more_smooth: false,
        };
        let labels: Vec<usize> = i64s(&r, &format!("{case}.labels"))
            .1
            .iter()
            .map(|&l| l as usize)
            .collect();
        let b = labels.len();
        let plan = EditPlan {
            source: source.iter().map(|s| vec![s.clone()]).collect(),
            keep: masks,
        }
        .repeat(b);
        let greedy = opts.top_k == 1;
        let mut hooks = Replay {
            drawn: (!greedy).then(|| {
                (0..pn.num_scales())
                    .map(|si| rows(&r, &format!("{case}.drawn.{si}")))
                    .collect()
            }),
            tokens: Vec::new(),
        };
        let g = block_on(pipe.edit(&Condition::classes(&labels), &opts, plan, &mut hooks)).unwrap();
        for si in 0..pn.num_scales() {
            assert_eq!(
                hooks.tokens[si],
                rows(&r, &format!("{case}.mixed.{si}")),
                "{case}: tokens of scale {si}"
            );
        }
        let f = host(g.f_hat);
        assert_close(
            &format!("{case}: f_hat"),
            &f,
            &f32s(&r, &format!("{case}.f_hat")).1,
            1e-4,
        );
    }
}

/// Kept tokens are the source's at every kept position; the kept half of the decoded image
/// stays close to the VQ-VAE reconstruction of the source.
#[test]
fn kept_tokens_and_pixels_come_from_the_source() {
    let d = Device::flex();
    let pipe = Pipeline::from_bytes(tiny_safetensors(3), &d).unwrap();
    let opts = SampleOptions {
        cfg: 2.0,
        top_k: 50,
        top_p: 0.9,
        seed: 3,
        more_smooth: false,
    };
    let src = block_on(pipe.generate_with(
        &[Condition::Class(2)],
        &opts,
        &mut nextscale::sampler::NoHooks,
    ))
    .unwrap();
    let img = &block_on(pipe.decode(&src)).unwrap()[0];
    let rgba = img.to_rgba();
    let view = RgbaView::new(img.width, img.height, &rgba).unwrap();
    let pns = pipe.var_config().patch_nums.as_slice().to_vec();
    let last = *pns.last().unwrap();
    let region = Region::Mask(Half::Top.mask(last));
    let plan = block_on(pipe.plan_edit(&view, &region, 2)).unwrap();
    let source_last = plan.source.last().unwrap()[0].clone();
    let keep_last = plan.keep.last().unwrap().clone();
    let recon = {
        let idx: Vec<_> = plan
            .source
            .iter()
            .map(|s| {
                let v: Vec<i64> = s[0].iter().map(|&x| x as i64).collect();
                let n = v.len();
                nextscale::burn::tensor::Tensor::from_data(
                    nextscale::burn::tensor::TensorData::new(v, [1, n]),
                    &d,
                )
            })
            .collect();
        block_on(pipe.decode_fhat(pipe.quantizer().idx_to_fhat(&idx))).unwrap()[0].clone()
    };
    let opts = SampleOptions { seed: 11, ..opts };
    let g = block_on(pipe.edit(
        &[Condition::Class(5), Condition::Unconditional],
        &opts,
        plan,
        &mut nextscale::sampler::NoHooks,
    ))
    .unwrap();
    let start = g.tokens[0].len() - last * last;
    for t in &g.tokens {
        for (i, (&tok, &k)) in t[start..].iter().zip(&keep_last).enumerate() {
            if k {
                assert_eq!(tok, source_last[i], "kept token {i}");
            }
        }
    }
    // The top quarter (far from the regenerated half) decodes close to the reconstruction.
    let out = block_on(pipe.decode(&g)).unwrap();
    let (w, h) = (img.width, img.height);
    for o in &out {
        let n = (h / 4) * w * 3;
        let mad: f64 = o.data[..n]
            .iter()
            .zip(&recon.data[..n])
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / n as f64;
        assert!(
            mad < 8.0,
            "kept region differs from the source by {mad:.2} grey levels on average"
        );
    }
}

#[test]
fn bad_edits_are_refused_with_messages() {
    let d = Device::flex();
    let pipe = Pipeline::from_bytes(tiny_safetensors(0), &d).unwrap();
    let rgba = vec![128u8; 8 * 8 * 4];
    let img = RgbaView::new(8, 8, &rgba).unwrap();
    let err = |r: Result<EditPlan>| r.expect_err("must fail").to_string();
    let m = err(block_on(pipe.plan_edit(&img, &Region::KeepScales(0), 1)));
    assert!(m.contains("keep-scales must be from 1 to"), "{m}");
    let m = err(block_on(pipe.plan_edit(
        &img,
        &Region::Mask(vec![true; 3]),
        1,
    )));
    assert!(m.contains("the keep mask has 3 entries"), "{m}");
    let m = RgbaView::new(0, 5, &[]).err().unwrap().to_string();
    assert!(m.contains("empty or larger than the limit"), "{m}");
    let m = RgbaView::new(2, 2, &[0; 15]).err().unwrap().to_string();
    assert!(m.contains("needs 16 bytes, got 15"), "{m}");
    let strip = vec![0u8; 4 * 1000];
    let m = RgbaView::new(1000, 1, &strip)
        .unwrap()
        .to_chw(64, 255)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("too elongated"), "{m}");
}
