//! Training end to end on CPU, on a generated data set (coloured shapes, 4 classes, 32 px):
//! the tiny VQ-VAE and the tiny VAR learn (their losses fall by stated margins), an
//! interrupted run resumes to the same losses as an uninterrupted one, and the result exports
//! to a pack that samples.
//!
//! Margins (from runs of these exact settings): the VQ-VAE reconstruction L1 must fall to at
//! most half its first logged value in 60 steps; the VAR cross-entropy must fall by at least
//! 15 % of its first logged value (≈ ln 64 at the start) in 80 steps. Resumed runs must
//! match the uninterrupted run's logged losses to 1e-4 (relative).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_native-trainer"));
    c.stderr(Stdio::piped()).stdout(Stdio::piped());
    c
}

fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "native-trainer {args:?} failed:\n{err}"
    );
    err
}

/// Runs a command that must succeed and print one JSON report on stdout.
fn run_json(args: &[&str]) -> serde_json::Value {
    let out = bin().args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "native-trainer {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn fresh(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("nextscale-train-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

/// `(step, value)` of a column of `metrics.csv`.
/// The VAR depth a run folder's config.toml records.
fn recorded_depth(run: &Path) -> i64 {
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["model"]["depth"]
        .as_integer()
        .unwrap_or_else(|| panic!("{text}"))
}

fn column(run: &Path, name: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let v = f.get(i)?.parse::<f64>().ok()?;
            Some((f[0].parse().unwrap(), v))
        })
        .collect()
}

/// The JSON values of a JSON Lines file (`evaluate --items`).
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_same_losses(reference: &[(u64, f64)], resumed: &[(u64, f64)], from: u64, what: &str) {
    let after: Vec<&(u64, f64)> = resumed.iter().filter(|(st, _)| *st > from).collect();
    assert!(!after.is_empty(), "{what}: no steps after {from}");
    for (st, v) in after {
        let (_, r) = reference
            .iter()
            .find(|(a, _)| a == st)
            .unwrap_or_else(|| panic!("{what}: step {st} missing"));
        let tol = 1e-4 * r.abs().max(1.0);
        assert!(
            (v - r).abs() <= tol,
            "{what} step {st}: resumed {v} vs uninterrupted {r}"
        );
    }
}

#[test]
fn tiny_models_train_resume_and_export() {
    let data = fresh("shapes");
    run(&[
        "fixture",
        "shapes",
        "--out",
        s(&data),
        "--n",
        "16",
        "--size",
        "32",
    ]);
    // A file that does not decode must be skipped and reported, not fatal.
    std::fs::write(data.join("circle/corrupt.png"), b"not a png").unwrap();

    // --- VQ-VAE: learns ---
    let vq_common = [
        "--preset",
        "tiny",
        "--steps",
        "60",
        "--set",
        "train.eval_every=60",
        "--set",
        "train.sample_every=60",
        "--set",
        "train.ckpt_every=20",
        "--set",
        "train.log_every=5",
        "--set",
        "train.val_fraction=0.15",
    ];
    let vq_a = fresh("vq-a");
    let mut args = vec!["train-vqvae", "--data", s(&data), "--out", s(&vq_a)];
    args.extend(vq_common);
    let log = run(&args);
    assert!(
        log.contains("skipped 1 files"),
        "the corrupt file is reported:\n{log}"
    );
    let recon = column(&vq_a, "recon");
    let (first, last) = (recon[0].1, recon.last().unwrap().1);
    assert!(
        last <= 0.5 * first,
        "VQ-VAE reconstruction L1 fell from {first} only to {last}"
    );
    let psnr = column(&vq_a, "val_psnr");
    assert_eq!(psnr.len(), 1, "one validation at step 60");
    // --validate-only on the finished run validates its last checkpoint again: the same
    // figure as logged, printed as JSON, and nothing trained.
    args.push("--validate-only");
    let v = run_json(&args);
    assert_eq!(v["step"], 60, "{v}");
    let again = v["val_psnr"].as_f64().unwrap();
    assert!(
        (again - psnr[0].1).abs() < 1e-6 * psnr[0].1,
        "{again} vs {psnr:?}"
    );
    for f in [
        "vqvae.safetensors",
        "curves.png",
        "samples/step-00000060.png",
        "config.toml",
    ] {
        assert!(vq_a.join(f).is_file(), "{f} missing");
    }
    // The model file is an official-format state dict that loads strictly with its patch list.
    let ck = nextscale::Checkpoint::open(vq_a.join("vqvae.safetensors")).unwrap();
    let cfg = nextscale::vqvae::infer_config(&ck, None).unwrap();
    assert_eq!(cfg.patch_nums.as_slice(), &[1, 2, 4, 8]);
    nextscale::VqVae::from_checkpoint(ck, Some(cfg), &nextscale::burn::tensor::Device::flex())
        .unwrap();
    assert_eq!(
        std::fs::read_dir(vq_a.join("checkpoints")).unwrap().count(),
        3,
        "keep_last = 3 of 3 checkpoints"
    );

    // --- VQ-VAE: stopped at 40, the same command resumes to the same losses ---
    let vq_b = fresh("vq-b");
    let mut args = vec!["train-vqvae", "--data", s(&data), "--out", s(&vq_b)];
    args.extend(vq_common);
    let mut first_part = args.clone();
    first_part.extend(["--stop-after", "40"]);
    run(&first_part);
    let log = run(&args);
    assert!(log.contains("resuming from"), "{log}");
    assert_same_losses(
        &column(&vq_a, "loss"),
        &column(&vq_b, "loss"),
        40,
        "VQ-VAE loss",
    );
    assert_eq!(
        column(&vq_b, "loss").len(),
        column(&vq_a, "loss").len(),
        "no duplicate metric rows"
    );

    // --- VQ-VAE, decoder only: from the trained model, everything the tokens depend on
    // (encoder, quant_conv, codebook, φ) stays bit for bit and the decoder learns ---
    let vq_dec = fresh("vq-decoder");
    let vq_a_model = vq_a.join("vqvae.safetensors");
    let args = vec![
        "train-vqvae",
        "--data",
        s(&data),
        "--out",
        s(&vq_dec),
        "--init",
        s(&vq_a_model),
        "--set",
        "train.decoder_only=true",
        "--set",
        "train.dead_code_after=1",
        "--preset",
        "tiny",
        "--steps",
        "10",
        "--set",
        "train.eval_every=10",
        "--set",
        "train.sample_every=10",
        "--set",
        "train.log_every=5",
    ];
    run(&args);
    let before = nextscale::Checkpoint::open(&vq_a_model).unwrap();
    let after = nextscale::Checkpoint::open(vq_dec.join("vqvae.safetensors")).unwrap();
    let (mut same, mut changed) = (0, 0);
    for key in before.keys() {
        let (x, y) = (before.read_f32(key).unwrap(), after.read_f32(key).unwrap());
        if key.starts_with("decoder.") || key.starts_with("post_quant_conv.") {
            changed += usize::from(x.data != y.data);
        } else if key != "quantize.ema_vocab_hit_SV" {
            assert!(x.data == y.data, "{key} changed in a decoder-only run");
            same += 1;
        }
    }
    assert!(
        same > 10 && changed > 10,
        "{same} frozen, {changed} trained tensors"
    );
    let decoder_recon = column(&vq_dec, "recon");
    assert!(
        decoder_recon.iter().all(|&(_, r)| r.is_finite()),
        "{decoder_recon:?}"
    );

    // --- tokens ---
    let tok = fresh("tokens");
    let vae = vq_a.join("vqvae.safetensors");
    run(&[
        "prepare",
        "--data",
        s(&data),
        "--vae",
        s(&vae),
        "--out",
        s(&tok),
        "--flip",
    ]);

    // --- VAR: learns ---
    let var_args = |out: &Path| -> Vec<String> {
        [
            "train-var",
            "--tokens",
            s(&tok),
            "--vae",
            s(&vae),
            "--out",
            s(out),
            "--preset",
            "tiny",
            "--steps",
            "80",
            "--set",
            "train.ckpt_every=10",
            "--set",
            "train.log_every=5",
            "--set",
            "train.eval_every=80",
            "--set",
            "train.sample_every=80",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let var_a = fresh("var-a");
    let a: Vec<String> = var_args(&var_a);
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let loss = column(&var_a, "loss");
    let (first, last) = (loss[0].1, loss.last().unwrap().1);
    assert!(
        last <= 0.85 * first,
        "VAR loss fell from {first} only to {last}"
    );
    assert!(var_a.join("samples/step-00000080.png").is_file());
    // A VQ-VAE-only setting on a VAR run, and caption noise on a run without captions, are
    // refused, not ignored.
    for (name, set, message) in [
        (
            "var-decoder-only",
            "train.decoder_only=true",
            "decoder_only is a VQ-VAE setting",
        ),
        (
            "var-text-noise",
            "train.text_noise=0.5",
            "text_noise perturbs caption embeddings",
        ),
    ] {
        let mut bad = var_args(&fresh(name));
        bad.extend(["--set".into(), set.into()]);
        let out = bin().args(&bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(message),
            "{set}: {err}"
        );
    }
    assert_eq!(
        column(&var_a, "acc_s3").len(),
        loss.len(),
        "per-scale accuracy is logged"
    );

    // --- VAR: scale_balance = 1 weighs every scale the same, so the logged loss (the
    // objective) is the plain mean of the per-scale losses (which stay unweighted), not the
    // mean over tokens. It starts from the trained model above, whose scales' losses differ
    // (from a fresh model they are all about ln(vocabulary) and the two means agree) ---
    let var_bal = fresh("var-balance");
    let mut args = var_args(&var_bal);
    let steps = args.iter().position(|a| a == "--steps").unwrap() + 1;
    args[steps] = "10".into();
    let init = var_a.join("var.safetensors");
    // The preset's depth is 2 like the init's; asking for 3 shows whose architecture is kept.
    args.extend(
        [
            "--set",
            "train.scale_balance=1",
            "--set",
            "model.depth=3",
            "--init",
            s(&init),
        ]
        .map(String::from),
    );
    run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // config.toml records the architecture trained (the init's), not the one asked for.
    assert_eq!(recorded_depth(&var_bal), 2);
    let pns = nextscale::Checkpoint::open(&init)
        .unwrap()
        .recorded_patch_nums()
        .unwrap()
        .expect("train-var records its scales");
    let sizes: Vec<f64> = pns.as_slice().iter().map(|&p| (p * p) as f64).collect();
    let scales: Vec<Vec<(u64, f64)>> = (0..sizes.len())
        .map(|i| column(&var_bal, &format!("loss_s{i}")))
        .collect();
    let logged = column(&var_bal, "loss");
    assert!(!logged.is_empty());
    for (row, &(step, loss)) in logged.iter().enumerate() {
        let per: Vec<f64> = scales.iter().map(|c| c[row].1).collect();
        let by_scale = per.iter().sum::<f64>() / per.len() as f64;
        let by_token =
            per.iter().zip(&sizes).map(|(l, n)| l * n).sum::<f64>() / sizes.iter().sum::<f64>();
        assert!(
            (by_scale - by_token).abs() > 1e-2 * by_scale,
            "step {step}: the two means ({by_scale}, {by_token}) are too close to tell apart"
        );
        assert!(
            (loss - by_scale).abs() < 1e-3 * by_scale,
            "step {step}: loss {loss}, mean of the scales' losses {by_scale}, over tokens {by_token}"
        );
    }

    // --- VAR: --validate-only validates the starting model (here the init) without training,
    // and validation scores the same items at any batch size (it once scored up to 8 batches,
    // so a run at batch 1 saw a few items and one at 16 saw all) ---
    let val_at = |batch: &str| {
        let dir = fresh(&format!("var-val-b{batch}"));
        let mut args = var_args(&dir);
        args.extend(
            [
                "--init",
                s(&init),
                "--batch-size",
                batch,
                "--set",
                "train.val_fraction=0.9",
                "--validate-only",
            ]
            .map(String::from),
        );
        let v = run_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(v["step"], 0, "{v}");
        assert!(!dir.exists(), "nothing is written");
        v["val_loss"].as_f64().unwrap()
    };
    let (v1, v16) = (val_at("1"), val_at("16"));
    assert!(
        (v1 - v16).abs() < 1e-4 * v16,
        "validation loss {v1} at batch 1, {v16} at batch 16"
    );
    // A fresh model (no checkpoint, no --init) is not validated.
    let mut fresh_model = var_args(&fresh("var-val-none"));
    fresh_model.push("--validate-only".into());
    let out = bin().args(&fresh_model).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no checkpoint and no --init"),
        "{err}"
    );
    // On a finished run it validates the last checkpoint: the figure logged at its last step.
    let mut again = var_args(&var_a);
    again.push("--validate-only".into());
    let v = run_json(&again.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["step"], 80, "{v}");
    let logged = column(&var_a, "val_loss").last().unwrap().1;
    let now = v["val_loss"].as_f64().unwrap();
    assert!((now - logged).abs() < 1e-5 * logged, "{now} vs {logged}");

    // --- VAR: --deepen puts a block on top of the init's; stopped at step 5, the same command
    // resumes from the run's own (deeper) checkpoint ---
    let var_deep = fresh("var-deep");
    let mut args = var_args(&var_deep);
    args[steps] = "10".into();
    args.extend(["--init", s(&init), "--deepen", "1"].map(String::from));
    let mut first = args.clone();
    first.extend(["--stop-after", "5"].map(String::from));
    run(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        var_deep
            .join("checkpoints/step-00000005.safetensors")
            .is_file()
    );
    let err = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("VAR depth 3"), "{err}");
    assert_eq!(recorded_depth(&var_deep), 3);
    let trained = nextscale::Checkpoint::open(var_deep.join("var.safetensors")).unwrap();
    let depth = nextscale::var::infer_config(&trained, None).unwrap().depth;
    assert_eq!(depth, 3);
    assert_eq!(column(&var_deep, "loss").last().map(|r| r.0), Some(10));

    // --- VAR: killed mid-run, rerun resumes from its last checkpoint ---
    let var_b = fresh("var-b");
    let b: Vec<String> = var_args(&var_b);
    let mut child = bin().args(&b).spawn().unwrap();
    let t0 = Instant::now();
    while !var_b
        .join("checkpoints/step-00000020.safetensors")
        .is_file()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        if let Some(st) = child.try_wait().unwrap() {
            panic!("training ended before it could be interrupted: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = run(&b.iter().map(String::as_str).collect::<Vec<_>>());
    let resumed_at: u64 = log
        .split("(step ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume message:\n{log}"));
    assert!(resumed_at >= 20);
    assert_same_losses(&loss, &column(&var_b, "loss"), resumed_at, "VAR loss");

    // --- export the trained pair and sample from the pack ---
    let pack = fresh("shapes.nsp");
    run(&[
        "export",
        "--var",
        s(&var_a.join("var.safetensors")),
        "--vae",
        s(&vae),
        "--quant",
        "q8",
        "--cfg",
        "2.5",
        "--top-k",
        "20",
        "--top-p",
        "0.8",
        "--out",
        s(&pack),
        "--no-report",
    ]);
    let png = fresh("sample.png");
    run(&[
        "sample",
        "--pack",
        s(&pack),
        "--class",
        "2",
        "--seed",
        "1",
        "--out",
        s(&png),
    ]);
    let img = std::fs::read(&png).unwrap();
    assert!(img.starts_with(b"\x89PNG"), "a PNG was written");
    // The pack's VAR and the run's own state dict are one model to `average` (format, scales
    // and class names agree), as when a soup mixes a shipped pack with runs trained from it.
    let soup = fresh("pack-and-run.safetensors");
    run(&[
        "average",
        s(&pack),
        s(&var_a.join("var.safetensors")),
        "--out",
        s(&soup),
    ]);
    assert_eq!(
        nextscale::Checkpoint::open(&soup)
            .unwrap()
            .metadata()
            .get("averaged_from")
            .map(String::as_str),
        Some("2")
    );
    let (header, _) = nextscale::pack::read_header(&std::fs::read(&pack).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        header.class_names.as_deref(),
        Some(
            &[
                "circle".to_string(),
                "cross".into(),
                "square".into(),
                "triangle".into()
            ][..]
        )
    );

    // --- q4 weights fitted with GPTQ to sequences the model samples itself: every layer's
    // output error on those inputs is at most plain rounding's, and the pack samples ---
    let fitted = fresh("shapes-q4.nsp");
    let log = run(&[
        "export",
        "--var",
        s(&var_a.join("var.safetensors")),
        "--vae",
        s(&vae),
        "--quant",
        "q4",
        "--var-calibration",
        "8",
        "--out",
        s(&fitted),
        "--no-report",
    ]);
    let fits: Vec<(f64, f64)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split(": output error ").nth(1)?;
            let (gptq, rest) = rest.split_once(" (rounded to nearest with the max|x| scale: ")?;
            Some((gptq.parse().ok()?, rest.split(';').next()?.parse().ok()?))
        })
        .collect();
    // Per block: attn.mat_qkv, attn.proj, ffn.fc1, ffn.fc2, ada_lin.1; then head_nm, head.
    assert_eq!(fits.len(), 2 * 5 + 2, "{log}");
    for (gptq, nearest) in &fits {
        assert!(gptq <= nearest, "{log}");
    }
    let (header, _) = nextscale::pack::read_header(&std::fs::read(&fitted).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        header.meta.get("var_calibration").map(String::as_str),
        Some("GPTQ over 8 sampled sequences")
    );
    run(&[
        "sample",
        "--pack",
        s(&fitted),
        "--class",
        "1",
        "--out",
        s(&fresh("sample-q4.png")),
    ]);

    // --- the project's quality numbers: a classifier, held-out reconstruction, samples ---
    let held_out = fresh("shapes-test");
    run(&[
        "fixture",
        "shapes",
        "--out",
        s(&held_out),
        "--n",
        "8",
        "--size",
        "32",
        "--seed",
        "9",
    ]);
    // The classifier needs more images than the 16 per class above to generalise.
    let labelled = fresh("shapes-classifier");
    run(&[
        "fixture",
        "shapes",
        "--out",
        s(&labelled),
        "--n",
        "64",
        "--size",
        "32",
        "--seed",
        "3",
    ]);
    let clf = fresh("classifier.safetensors");
    let report = run_json(&[
        "train-classifier",
        "--data",
        s(&labelled),
        "--test",
        s(&held_out),
        "--size",
        "32",
        "--steps",
        "300",
        "--batch-size",
        "32",
        "--lr",
        "3e-3",
        "--out",
        s(&clf),
    ]);
    let acc = report["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.6,
        "the shape classifier should beat chance (0.25) clearly: {acc}"
    );

    let recon = fresh("shapes-recon");
    let report = run_json(&[
        "eval-vqvae",
        "--vae",
        s(&vae),
        "--data",
        s(&held_out),
        "--images",
        s(&recon),
    ]);
    assert_eq!(report["images"], 32);
    let psnr = report["psnr_db"].as_f64().unwrap();
    assert!(psnr > 10.0, "{report}");
    // --images: one PNG per image, named by its index and file (the four class folders reuse
    // file names), that measures as the report does against its original.
    let mut names: Vec<String> = std::fs::read_dir(&recon)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 32, "{names:?}");
    let mut originals: Vec<PathBuf> = Vec::new();
    for class in ["circle", "cross", "square", "triangle"] {
        originals.extend((0..8).map(|k| held_out.join(class).join(format!("{k:04}.png"))));
    }
    let mut err = 0.0;
    for (i, (name, original)) in names.iter().zip(&originals).enumerate() {
        let stem = original.file_stem().unwrap().to_string_lossy();
        assert_eq!(name, &format!("{i:05}-{stem}.png"));
        let a = image::open(recon.join(name)).unwrap().to_rgb8();
        let b = image::open(original).unwrap().to_rgb8();
        err += a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| ((f64::from(x) - f64::from(y)) / 255.0).powi(2))
            .sum::<f64>();
    }
    let from_files = -10.0 * (err / (32.0 * 32.0 * 32.0 * 3.0)).log10();
    assert!(
        (from_files - psnr).abs() < 0.2,
        "{from_files} dB from the files, {psnr} reported"
    );

    let items = fresh("items.jsonl");
    let report = run_json(&[
        "evaluate",
        "--pack",
        s(&pack),
        "--classifier",
        s(&clf),
        "--real",
        s(&held_out),
        "--reference",
        s(&data),
        "--per-class",
        "3",
        "--seed",
        "4",
        "--items",
        s(&items),
    ]);
    assert_eq!(report["mode"], "classes");
    // --items: one line per image, in class order, adding up to the report's accuracy.
    let lines = json_lines(&items);
    assert_eq!(lines.len(), 12);
    let right = lines.iter().filter(|l| l["seen"] == l["want"]).count();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            (&l["index"], &l["class"]),
            (&i.into(), &(i / 3).into()),
            "{l}"
        );
        for absent in ["rank_pixels", "prompt", "real_index", "unconditional"] {
            assert!(l.get(absent).is_none(), "{absent}: {l}");
        }
    }
    assert_eq!(
        report["accuracy_generated"].as_f64().unwrap(),
        right as f64 / 12.0
    );
    // Unset sampling options are the pack's recommended ones, as in `sample`.
    assert_eq!(
        (&report["cfg"], &report["top_k"], &report["top_p"]),
        (
            &serde_json::json!(2.5),
            &serde_json::json!(20),
            &serde_json::json!(0.8f32)
        ),
        "{report}"
    );
    assert_eq!(report["generated"], 12);
    assert_eq!(report["real"], 32);
    let fd = report["frechet_distance"].as_f64().unwrap();
    let floor = report["frechet_distance_reference_vs_real"]
        .as_f64()
        .unwrap();
    assert!(fd.is_finite() && fd >= 0.0 && floor.is_finite(), "{report}");
    let gen_acc = report["accuracy_generated"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&gen_acc), "{report}");

    // --keep-half completions name the real image each one completed (evenly spaced over
    // the 32 held-out images) and whether the class was withheld.
    let report = run_json(&[
        "evaluate",
        "--pack",
        s(&pack),
        "--classifier",
        s(&clf),
        "--real",
        s(&held_out),
        "--keep-half",
        "top",
        "--limit",
        "4",
        "--unconditional",
        "--items",
        s(&items),
    ]);
    assert_eq!(report["mode"], "completion");
    let lines = json_lines(&items);
    let picked: Vec<u64> = lines
        .iter()
        .map(|l| l["real_index"].as_u64().unwrap())
        .collect();
    assert_eq!(picked, [0, 8, 16, 24]);
    assert!(
        lines.iter().all(|l| l["unconditional"] == true),
        "{lines:?}"
    );
    // A classifier for another image size is refused with a message, not a crash.
    let wrong = fresh("classifier-16.safetensors");
    run(&[
        "train-classifier",
        "--data",
        s(&data),
        "--size",
        "16",
        "--steps",
        "2",
        "--out",
        s(&wrong),
    ]);
    let out = bin()
        .args([
            "evaluate",
            "--pack",
            s(&pack),
            "--classifier",
            s(&wrong),
            "--real",
            s(&held_out),
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the classifier sees 16×16 images"), "{err}");
}

/// A VQ-VAE run that holds nothing out logs no validation figures (it once logged the
/// training images' reconstruction as `val_*`), still draws its sample grid from training
/// images, and says so at the start.
#[test]
fn vqvae_without_held_out_images_logs_no_validation() {
    let data = fresh("shapes-all-train");
    run(&[
        "fixture",
        "shapes",
        "--out",
        s(&data),
        "--n",
        "8",
        "--size",
        "32",
    ]);
    let out = fresh("vq-no-val");
    let mut args = vec![
        "train-vqvae",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--set",
        "train.val_fraction=0",
        "--set",
        "train.eval_every=1",
        "--set",
        "train.sample_every=2",
        "--set",
        "train.log_every=1",
    ];
    let log = run(&args);
    assert!(log.contains("nothing is held out"), "{log}");
    assert!(!log.contains("validation recon"), "{log}");
    assert_eq!(column(&out, "recon").len(), 2, "training is still logged");
    assert!(column(&out, "val_psnr").is_empty(), "no validation figure");
    // Its curves leave out the validation PSNR panel: two panels of 420 pixels, not three.
    let curves = image::open(out.join("curves.png")).unwrap();
    assert_eq!(curves.width(), 2 * 420);
    assert!(out.join("samples/step-00000002.png").is_file());
    // Validating that run is refused: nothing is held out to validate on.
    args.push("--validate-only");
    let o = bin().args(&args).output().expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no item is held out"),
        "{err}"
    );
}
