//! Text conditioning end to end on CPU: a text-conditioned VAR trains on captions embedded by
//! the real all-MiniLM-L6-v2 (`scripts/fetch-minilm.sh` or `$NEXTSCALE_MINILM_DIR`) and
//! samples from a prompt; an adapter trains on a frozen class-conditional VAR, leaves it
//! untouched, and changes what a prompt generates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn minilm() -> PathBuf {
    let dir = match std::env::var_os("NEXTSCALE_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nextscale/all-MiniLM-L6-v2")
        }
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 not found at {} (run scripts/fetch-minilm.sh or set NEXTSCALE_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// Whether the command succeeded, and its stderr then its stdout.
fn run_status(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_native-trainer"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// Runs a command that must succeed and print one JSON report on stdout.
fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_native-trainer"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "native-trainer {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn run(args: &[&str]) -> String {
    let (ok, err) = run_status(args);
    assert!(ok, "native-trainer {args:?} failed:\n{err}");
    err
}

fn fresh(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("nextscale-text-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    d
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

fn column(run: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == name).unwrap();
    lines
        .filter_map(|l| l.split(',').nth(i)?.parse().ok())
        .collect()
}

const COMMON: [&str; 8] = [
    "--set",
    "train.log_every=5",
    "--set",
    "train.eval_every=1000",
    "--set",
    "train.sample_every=1000",
    "--set",
    "train.ckpt_every=1000",
];

#[test]
fn text_conditioned_var_adapter_and_lora() {
    let enc = minilm();
    let cap = fresh("captioned");
    let cls = fresh("classes");
    run(&[
        "fixture",
        "shapes",
        "--captions",
        "--out",
        s(&cap),
        "--n",
        "16",
    ]);
    run(&["fixture", "shapes", "--out", s(&cls), "--n", "16"]);
    let meta = std::fs::read_to_string(cap.join("metadata.jsonl")).unwrap();
    assert_eq!(meta.lines().count(), 64);

    let vq = fresh("vq");
    let mut a = vec![
        "train-vqvae",
        "--data",
        s(&cls),
        "--out",
        s(&vq),
        "--steps",
        "40",
    ];
    a.extend(COMMON);
    run(&a);
    let vae = vq.join("vqvae.safetensors");
    let (tok_cap, tok_cls) = (fresh("tok-cap"), fresh("tok-cls"));
    run(&[
        "prepare",
        "--data",
        s(&cap),
        "--vae",
        s(&vae),
        "--out",
        s(&tok_cap),
    ]);
    run(&[
        "prepare",
        "--data",
        s(&cls),
        "--vae",
        s(&vae),
        "--out",
        s(&tok_cls),
    ]);

    // --- text-conditioned VAR ---
    let tv = fresh("text-var");
    // A 60-step text VAR into `out`, with `extra` arguments.
    let train_text_var = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "train-var",
            "--tokens",
            s(&tok_cap),
            "--vae",
            s(&vae),
            "--out",
            s(out),
            "--text-encoder",
            s(&enc),
            "--steps",
            "60",
        ];
        a.extend(COMMON);
        a.extend(extra);
        run(&a)
    };
    let log = train_text_var(&tv, &[]);
    assert!(
        log.contains("conditioned on 384-d caption embeddings"),
        "{log}"
    );
    let loss = column(&tv, "loss");
    assert!(
        *loss.last().unwrap() <= 0.9 * loss[0],
        "text VAR loss fell from {} only to {}",
        loss[0],
        loss.last().unwrap()
    );
    // Caption noise reaches the training steps: five steps from the same start give the
    // logged loss of the run above without it, and another with it.
    for (noise, same) in [("0", true), ("1", false)] {
        let short = fresh(&format!("text-var-noise-{noise}"));
        let set = format!("train.text_noise={noise}");
        train_text_var(&short, &["--stop-after", "5", "--set", &set]);
        let first = column(&short, "loss")[0];
        assert_eq!(
            first == loss[0],
            same,
            "noise {noise}: {first} vs {}",
            loss[0]
        );
    }
    let ck = nextscale::Checkpoint::open(tv.join("var.safetensors")).unwrap();
    assert_eq!(ck.shape("text_proj.weight"), Some(&[64, 384][..]));
    assert_eq!(
        ck.shape("class_emb.weight"),
        Some(&[1, 64][..]),
        "only the null row"
    );
    let grid = fresh("prompt.png");
    let var = tv.join("var.safetensors");
    run(&[
        "sample",
        "--var",
        s(&var),
        "--vae",
        s(&vae),
        "--text-encoder",
        s(&enc),
        "--prompt",
        "a red circle",
        "--n",
        "2",
        "--cfg",
        "2",
        "--out",
        s(&grid),
    ]);
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"));
    let (ok, err) = run_status(&[
        "sample",
        "--var",
        s(&var),
        "--vae",
        s(&vae),
        "--class",
        "1",
        "--out",
        s(&grid),
    ]);
    assert!(
        !ok && err.contains("text-conditioned: give a prompt"),
        "{err}"
    );
    // A 4-bit encoder fitted to the captions (GPTQ) keeps their embeddings closer to f32's
    // than rounding each weight to nearest.
    let captions = cap.join("metadata.jsonl");
    let cosine = |calibrate: bool| {
        let out = fresh(if calibrate { "gptq.nsp" } else { "rtn.nsp" });
        let mut a = vec![
            "export",
            "--var",
            s(&var),
            "--vae",
            s(&vae),
            "--text-encoder",
            s(&enc),
            "--quant",
            "q8",
            "--text-quant",
            "q4",
            "--report-prompts",
            s(&captions),
            "--out",
            s(&out),
        ];
        if calibrate {
            a.extend(["--text-calibration", s(&captions)]);
        }
        let log = run(&a);
        let mean = log
            .split("embedding cosine to f32 over ")
            .nth(1)
            .and_then(|r| r.split("mean ").nth(1))
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("no cosine in {log}"));
        mean.parse::<f64>().unwrap()
    };
    let (rtn, gptq) = (cosine(false), cosine(true));
    assert!(gptq > rtn && gptq > 0.98, "GPTQ {gptq}, nearest {rtn}");

    // `evaluate` on the text pack: one prompt per caption, judged by a classifier of the
    // shapes, ranked against every real image, and written out per image with `--items`.
    let clf = fresh("shapes-classifier.safetensors");
    run(&[
        "train-classifier",
        "--data",
        s(&cls),
        "--size",
        "32",
        "--steps",
        "2",
        "--out",
        s(&clf),
    ]);
    let judged = fresh("judged");
    std::fs::create_dir_all(&judged).unwrap();
    let mut rows = String::new();
    for line in meta.lines().step_by(8) {
        let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = r["file_name"].as_str().unwrap().to_string();
        let shape = file
            .trim_start_matches("images/")
            .split('-')
            .next()
            .unwrap()
            .to_string();
        r["shape"] = shape.into();
        let dest = judged.join(file.trim_start_matches("images/"));
        std::fs::copy(cap.join(&file), &dest).unwrap();
        r["file_name"] = file.trim_start_matches("images/").into();
        rows.push_str(&format!("{r}\n"));
    }
    std::fs::write(judged.join("metadata.jsonl"), &rows).unwrap();
    let items = fresh("items.jsonl");
    let gptq_pack = items.with_file_name("gptq.nsp");
    let images = fresh("judged-images");
    let report = run_json(&[
        "evaluate",
        "--pack",
        s(&gptq_pack),
        "--classifier",
        s(&clf),
        "--real",
        s(&judged),
        "--label-field",
        "shape",
        "--rank",
        "--items",
        s(&items),
        "--images",
        s(&images),
        "--batch",
        "3",
    ]);
    let lines = json_lines(&items);
    assert_eq!(lines.len(), 8);
    assert_eq!(report["generated"], 8);
    assert_eq!(report["ranking"]["candidates"], 8);
    // 16×16 box means of an image, the real ones composited on white as the trainer reads
    // them: to check that `--images` wrote the very images that were ranked.
    let means = |im: &image::RgbaImage| -> Vec<f64> {
        let f = im.width() / 16;
        (0..16 * 16 * 3)
            .map(|o| {
                let (c, by, bx) = (o % 3, (o / 3 / 16) as u32, (o / 3 % 16) as u32);
                let mut sum = 0.0;
                for y in by * f..(by + 1) * f {
                    for x in bx * f..(bx + 1) * f {
                        let p = im.get_pixel(x, y);
                        let a = f64::from(p[3]) / 255.0;
                        sum += a * f64::from(p[c]) + (1.0 - a) * 255.0;
                    }
                }
                sum
            })
            .collect()
    };
    let reals: Vec<(String, Vec<f64>)> = rows
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            let file = r["file_name"].as_str().unwrap().to_string();
            let im = image::open(judged.join(&file)).unwrap().to_rgba8();
            assert_eq!(im.dimensions(), (32, 32), "{file}");
            (file, means(&im))
        })
        .collect();
    let (mut right, mut top1, mut feature_top1) = (0, 0, 0);
    for (i, (item, want)) in lines.iter().zip(rows.lines()).enumerate() {
        let want: serde_json::Value = serde_json::from_str(want).unwrap();
        assert_eq!(item["index"], i);
        assert_eq!(item["prompt"], want["text"]);
        assert_eq!(item["file_name"], want["file_name"]);
        assert_eq!(item["want"], want["shape"]);
        right += usize::from(item["seen"] == item["want"]);
        let r = item["rank_pixels"].as_u64().unwrap();
        assert!(
            (1..=8).contains(&r) && item["rank_features"].as_u64().is_some(),
            "{item}"
        );
        top1 += usize::from(r == 1);
        // The nearest image by pixels is the right one exactly when the rank is 1.
        assert_eq!(
            r == 1,
            item["nearest_pixels"] == item["file_name"],
            "{item}"
        );
        feature_top1 += usize::from(item["rank_features"] == 1);
        // `--images` wrote the very image that was ranked, numbered like its line across
        // batches of 3: the real image nearest to the file by 16×16 means is `nearest_pixels`.
        let png = image::open(images.join(format!("{i:05}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (32, 32));
        let m = means(&png.to_rgba8());
        let dist = |r: &[f64]| -> f64 { m.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum() };
        let nearest = &reals
            .iter()
            .min_by(|a, b| dist(&a.1).total_cmp(&dist(&b.1)))
            .unwrap()
            .0;
        assert_eq!(item["nearest_pixels"], nearest.as_str(), "{item}");
    }
    assert!(!images.join("00008.png").exists());
    let per_class = report["per_class"].as_array().unwrap();
    let real: u64 = per_class.iter().map(|c| c["real"].as_u64().unwrap()).sum();
    let real_right: f64 = per_class
        .iter()
        .map(|c| c["real"].as_f64().unwrap() * c["accuracy_real"].as_f64().unwrap())
        .sum();
    assert_eq!(real, 8, "{report}");
    let overall = report["accuracy_real"].as_f64().unwrap();
    assert!((real_right / 8.0 - overall).abs() < 1e-9, "{report}");
    // The per-image lines add up to the report's figures.
    assert_eq!(
        report["accuracy_generated"].as_f64().unwrap(),
        right as f64 / 8.0
    );
    assert_eq!(
        report["ranking"]["pixels_16x16"]["top1"].as_f64().unwrap(),
        top1 as f64 / 8.0
    );
    assert_eq!(
        report["ranking"]["classifier_features"]["top1"]
            .as_f64()
            .unwrap(),
        feature_top1 as f64 / 8.0
    );
    // A run's checkpoints are judged without exporting them: the f32 VAR, its VQ-VAE and the
    // sentence encoder, at the settings given.
    let report = run_json(&[
        "evaluate",
        "--var",
        s(&var),
        "--vae",
        s(&vae),
        "--text-encoder",
        s(&enc),
        "--classifier",
        s(&clf),
        "--real",
        s(&judged),
        "--label-field",
        "shape",
        "--limit",
        "2",
        "--cfg",
        "2",
    ]);
    assert_eq!(
        (&report["generated"], &report["cfg"]),
        (&2.into(), &2.0.into()),
        "{report}"
    );
    assert_eq!(report["mode"], "prompts");
    // Two prompts of four shapes: a class with no image has no share, not 0.
    for c in report["per_class"].as_array().unwrap() {
        assert_eq!(c["accuracy"].is_null(), c["generated"] == 0, "{c}");
        assert_eq!(c["accuracy_real"].is_null(), c["real"] == 0, "{c}");
    }
    // A text-conditioned VAR without its sentence encoder is refused with the reason.
    let (ok, err) = run_status(&[
        "evaluate",
        "--var",
        s(&var),
        "--vae",
        s(&vae),
        "--classifier",
        s(&clf),
        "--real",
        s(&judged),
        "--label-field",
        "shape",
    ]);
    assert!(
        !ok && err.contains("give its sentence encoder with --text-encoder"),
        "{err}"
    );

    // --- adapter on a frozen class-conditional VAR ---
    let base = fresh("base");
    let mut a = vec![
        "train-var",
        "--tokens",
        s(&tok_cls),
        "--vae",
        s(&vae),
        "--out",
        s(&base),
        "--steps",
        "40",
    ];
    a.extend(COMMON);
    run(&a);
    let base_var = base.join("var.safetensors");
    let before = std::fs::read(&base_var).unwrap();
    let adp = fresh("adapter");
    let mut a = vec![
        "train-adapter",
        "--var",
        s(&base_var),
        "--tokens",
        s(&tok_cap),
        "--vae",
        s(&vae),
        "--text-encoder",
        s(&enc),
        "--out",
        s(&adp),
        "--steps",
        "30",
        "--set",
        "train.lr=3e-3",
    ];
    a.extend(COMMON);
    run(&a);
    assert_eq!(
        std::fs::read(&base_var).unwrap(),
        before,
        "the frozen VAR file is untouched"
    );
    let ack = nextscale::Checkpoint::open(adp.join("adapter.safetensors")).unwrap();
    let fc2 = ack.read_f32("fc2.weight").unwrap();
    assert_eq!(fc2.shape, vec![64, 128]);
    assert!(
        fc2.data.iter().any(|&x| x != 0.0),
        "the zero-initialised output layer learned"
    );
    assert!(column(&adp, "loss").iter().all(|l| l.is_finite()));
    // The adapter steers generation: same seed, with and without it.
    let (with, without) = (fresh("with.json"), fresh("without.json"));
    run(&[
        "sample",
        "--var",
        s(&base_var),
        "--vae",
        s(&vae),
        "--text-encoder",
        s(&enc),
        "--adapter",
        s(&adp.join("adapter.safetensors")),
        "--prompt",
        "a blue square",
        "--seed",
        "3",
        "--top-k",
        "1",
        "--tokens-out",
        s(&with),
    ]);
    run(&[
        "sample",
        "--var",
        s(&base_var),
        "--vae",
        s(&vae),
        "--class",
        "4",
        "--seed",
        "3",
        "--top-k",
        "1",
        "--tokens-out",
        s(&without),
    ]);
    assert_ne!(
        std::fs::read(&with).unwrap(),
        std::fs::read(&without).unwrap(),
        "the adapter changes the tokens"
    );

    // --- LoRA: the data's classes as new classes of the frozen class-conditional VAR ---
    let lora = fresh("lora");
    let mut a = vec![
        "train-lora",
        "--var",
        s(&base_var),
        "--tokens",
        s(&tok_cls),
        "--vae",
        s(&vae),
        "--out",
        s(&lora),
        "--steps",
        "20",
        "--set",
        "train.lr=3e-3",
    ];
    a.extend(COMMON);
    let log = run(&a);
    assert!(log.contains("new ones"), "{log}");
    assert_eq!(
        std::fs::read(&base_var).unwrap(),
        before,
        "the base is untouched"
    );
    assert!(column(&lora, "loss").iter().all(|l| l.is_finite()));
    let lck = nextscale::Checkpoint::open(lora.join("lora.safetensors")).unwrap();
    let base_classes = nextscale::Checkpoint::open(&base_var)
        .unwrap()
        .shape("class_emb.weight")
        .unwrap()[0]
        - 1;
    let new = lck.shape("new_class_emb").unwrap()[0];
    assert!(new > 0);
    let b = lck.read_f32("blocks.0.attn.mat_qkv.lora_B.weight").unwrap();
    assert_eq!(b.shape, vec![3 * 64, 4], "PEFT layout [out, r]");
    assert!(b.data.iter().any(|&x| x != 0.0), "LoRA B learned");
    let pack = fresh("lora.nsp");
    run(&[
        "export",
        "--var",
        s(&base_var),
        "--vae",
        s(&vae),
        "--lora",
        s(&lora.join("lora.safetensors")),
        "--quant",
        "f32",
        "--out",
        s(&pack),
    ]);
    let new_class = (base_classes + new - 1).to_string();
    let grid = fresh("lora.png");
    run(&[
        "sample",
        "--pack",
        s(&pack),
        "--class",
        &new_class,
        "--n",
        "2",
        "--out",
        s(&grid),
    ]);
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"));
    let past = (base_classes + new + 1).to_string();
    let (ok, err) = run_status(&[
        "sample",
        "--pack",
        s(&pack),
        "--class",
        &past,
        "--out",
        s(&grid),
    ]);
    assert!(!ok && err.contains("out of range"), "{err}");
}
