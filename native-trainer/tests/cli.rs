//! End-to-end runs of the `native-trainer` binary on the golden test weights.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    match std::env::var_os("NEXTSCALE_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/var-golden"),
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_native-trainer"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nextscale-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Row `row` of the I64 `[B, L]` tensor `key` of a golden safetensors file.
fn golden_row(file: &str, key: &str, row: usize) -> Vec<i64> {
    let ck = nextscale::Checkpoint::open(golden_dir().join(file)).unwrap();
    let (shape, v) = ck.read_i64(key).unwrap();
    v[row * shape[1]..(row + 1) * shape[1]].to_vec()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "native-trainer failed:\n{err}");
    err
}

/// The tiny fixture model (seed `seed`) at `NAME.safetensors` and its q8 pack at `NAME.nsp`.
fn tiny_q8_pack(name: &str, seed: &str) -> (PathBuf, PathBuf) {
    let (model, pack) = (
        tmp(&format!("{name}.safetensors")),
        tmp(&format!("{name}.nsp")),
    );
    run(bin()
        .args(["fixture", "tiny", "--seed", seed, "--out"])
        .arg(&model));
    run(bin()
        .args(["export", "--quant", "q8", "--no-report", "--var"])
        .arg(&model)
        .arg("--out")
        .arg(&pack));
    (model, pack)
}

#[test]
fn greedy_tokens_equal_the_official_run() {
    let g = golden_dir();
    let tokens = tmp("greedy.json");
    let log = run(bin()
        .args([
            "sample", "--class", "3", "--top-k", "1", "--cfg", "4", "--seed", "42",
        ])
        .args([
            "--var".as_ref(),
            g.join("var_d2_random.pth").as_os_str(),
            "--vae".as_ref(),
            g.join("vqvae_quant_parts.safetensors").as_os_str(),
            "--tokens-out".as_ref(),
            tokens.as_os_str(),
        ]));
    assert!(
        log.contains("scale 10/10"),
        "per-scale progress is shown:\n{log}"
    );
    let got: Vec<Vec<i64>> = serde_json::from_slice(&std::fs::read(&tokens).unwrap()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 680);
    assert_eq!(
        got[0],
        golden_row("var_d2_infer_cfg4.0_greedy.safetensors", "idx_BL", 0)
    );
}

/// `--warmup` samples the images once untimed before the timed run; the run after it samples
/// the same tokens as a run without it (top-k 900: every token drawn from the seed's stream).
#[test]
fn a_warm_up_leaves_the_samples_unchanged() {
    let g = golden_dir();
    let sample = |warmup: bool, name: &str| {
        let tokens = tmp(name);
        let mut cmd = bin();
        cmd.args(["sample", "--class", "3,7", "--top-k", "900", "--seed", "5"])
            .arg("--var")
            .arg(g.join("var_d2_random.safetensors"))
            .arg("--vae")
            .arg(g.join("vqvae_quant_parts.safetensors"))
            .arg("--tokens-out")
            .arg(&tokens);
        if warmup {
            cmd.arg("--warmup");
        }
        let log = run(&mut cmd);
        assert_eq!(log.contains("warm-up: sampled"), warmup, "{log}");
        std::fs::read(&tokens).unwrap()
    };
    assert_eq!(sample(true, "warm.json"), sample(false, "cold.json"));
}

#[test]
fn samples_a_png_with_the_generated_vqvae() {
    let g = golden_dir();
    let vae = tmp("vqvae.safetensors");
    run(bin().args(["fixture", "vqvae", "--out"]).arg(&vae));
    let png = tmp("out.png");
    run(bin()
        .args([
            "sample", "--class", "207", "--seed", "0", "--device", "cpu", "--var",
        ])
        .arg(g.join("var_d2_random.safetensors"))
        .arg("--vae")
        .arg(&vae)
        .arg("--out")
        .arg(&png));
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
    let _ = std::fs::remove_file(&vae);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = golden_dir();
    let out = bin()
        .args([
            "sample",
            "--class",
            "5000",
            "--tokens-out",
            "/dev/null",
            "--var",
        ])
        .arg(g.join("var_d2_random.safetensors"))
        .arg("--vae")
        .arg(g.join("vqvae_quant_parts.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("class 5000 is out of range"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = bin()
        .args([
            "sample",
            "--class",
            "1",
            "--tokens-out",
            "/dev/null",
            "--var",
            "/nonexistent.pth",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pth"));
}

#[test]
fn an_f32_pack_samples_the_same_tokens_as_its_checkpoints() {
    let g = golden_dir();
    let pack = tmp("d2-f32.nsp");
    let var = g.join("var_d2_random.safetensors");
    // Export needs a full VQ-VAE; the tiny fixture carries one.
    let tiny = tmp("tiny.safetensors");
    run(bin().args(["fixture", "tiny", "--out"]).arg(&tiny));
    run(bin()
        .args(["export", "--quant", "f32", "--no-report", "--var"])
        .arg(&tiny)
        .arg("--out")
        .arg(&pack));
    let sample = |src: &[&std::ffi::OsStr], out: &PathBuf| {
        run(bin()
            .args([
                "sample",
                "--class",
                "4",
                "--top-k",
                "20",
                "--seed",
                "9",
                "--tokens-out",
            ])
            .arg(out)
            .args(src));
        std::fs::read_to_string(out).unwrap()
    };
    let a = sample(&["--var".as_ref(), tiny.as_os_str()], &tmp("a.json"));
    let b = sample(&["--pack".as_ref(), pack.as_os_str()], &tmp("b.json"));
    assert_eq!(a, b);
    // --pack and --var together are refused by the parser.
    let out = bin()
        .args([
            "sample",
            "--class",
            "1",
            "--tokens-out",
            "/dev/null",
            "--pack",
        ])
        .arg(&pack)
        .arg("--var")
        .arg(&var)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `export --text-encoder` with a Hugging Face CLIP folder: the pack samples, for a prompt,
/// exactly the tokens the checkpoint and the folder do (f32), and a 4-bit pack of it runs;
/// calibration, which is for MiniLM, is refused by name.
#[test]
fn a_clip_folder_exports_into_a_pack_that_samples_the_same_tokens() {
    let clip = tmp("clip");
    run(bin().args(["fixture", "clip", "--out"]).arg(&clip));
    let tiny = tmp("tiny-text64.safetensors");
    run(bin()
        .args([
            "fixture",
            "tiny",
            "--text-dim",
            "64",
            "--seed",
            "4",
            "--out",
        ])
        .arg(&tiny));
    let export = |quant: &str, out: &PathBuf| {
        run(bin()
            .args(["export", "--quant", quant, "--no-report", "--var"])
            .arg(&tiny)
            .arg("--text-encoder")
            .arg(&clip)
            .arg("--out")
            .arg(out));
    };
    let (f32_pack, q4_pack) = (tmp("clip-f32.nsp"), tmp("clip-q4.nsp"));
    export("f32", &f32_pack);
    export("q4", &q4_pack);
    let sample = |src: &[&std::ffi::OsStr], out: &PathBuf| {
        run(bin()
            .args([
                "sample",
                "--prompt",
                "a red circle",
                "--top-k",
                "20",
                "--seed",
                "5",
                "--tokens-out",
            ])
            .arg(out)
            .args(src));
        std::fs::read_to_string(out).unwrap()
    };
    let from_folder = sample(
        &[
            "--var".as_ref(),
            tiny.as_os_str(),
            "--text-encoder".as_ref(),
            clip.as_os_str(),
        ],
        &tmp("clip-a.json"),
    );
    let from_pack = sample(
        &["--pack".as_ref(), f32_pack.as_os_str()],
        &tmp("clip-b.json"),
    );
    assert_eq!(from_folder, from_pack);
    sample(
        &["--pack".as_ref(), q4_pack.as_os_str()],
        &tmp("clip-c.json"),
    );
    let prompts = tmp("clip-prompts.txt");
    std::fs::write(&prompts, "a red circle\n").unwrap();
    let err = fail(
        bin()
            .args(["export", "--quant", "q4", "--var"])
            .arg(&tiny)
            .arg("--text-encoder")
            .arg(&clip)
            .arg("--text-calibration")
            .arg(&prompts)
            .arg("--out")
            .arg(tmp("clip-cal.nsp")),
    );
    assert!(err.contains("MiniLM"), "{err}");
}

fn fail(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "must fail with a message:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `edit` keeps the source's tokens where the mask is black and regenerates where it is
/// white; the kept tokens are those `prepare`-style encoding gives; bad requests are refused.
#[test]
fn edit_keeps_the_masked_source_and_refuses_bad_requests() {
    let model = tmp("edit-tiny.safetensors");
    run(bin()
        .args(["fixture", "tiny", "--seed", "2", "--out"])
        .arg(&model));
    let src_dir = tmp("edit-src");
    run(bin()
        .args(["sample", "--class", "4", "--seed", "5", "--var"])
        .arg(&model)
        .arg("--out-dir")
        .arg(&src_dir));
    let src = src_dir.join("0000_class4.png");
    // The source's own tokens: an edit that keeps every scale returns them unchanged.
    let all = tmp("edit-all.json");
    run(bin()
        .args(["edit", "--keep-scales", "7", "--var"])
        .arg(&model)
        .arg("--image")
        .arg(&src)
        .arg("--tokens-out")
        .arg(&all));
    let source: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(&all).unwrap()).unwrap();
    // A mask whose left half is white (regenerate) and right half black (keep), at another size.
    let mask = tmp("edit-mask.png");
    let (w, h) = (100u32, 100u32);
    let px: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            if i % w < w / 2 {
                [255, 255, 255]
            } else {
                [0, 0, 0]
            }
        })
        .collect();
    image::save_buffer(&mask, &px, w, h, image::ColorType::Rgb8).unwrap();
    let out = tmp("edit-out.json");
    let log = run(bin()
        .args(["edit", "--class", "1", "--n", "2", "--seed", "3", "--var"])
        .arg(&model)
        .arg("--image")
        .arg(&src)
        .arg("--mask")
        .arg(&mask)
        .arg("--tokens-out")
        .arg(&out)
        .arg("--out")
        .arg(tmp("edit-grid.png")));
    assert!(
        log.contains("keeping 50 % of the finest scale's tokens"),
        "{log}"
    );
    let got: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got.len(), 2);
    // The finest scale is 8×8 in the tiny model: columns 4–7 are kept.
    let n = got[0].len();
    for t in &got {
        for y in 0..8 {
            for x in 4..8 {
                let i = n - 64 + y * 8 + x;
                assert_eq!(t[i], source[0][i], "kept token ({y}, {x})");
            }
        }
    }
    assert_ne!(
        got[0][n - 64..],
        source[0][n - 64..],
        "the white half is regenerated"
    );

    let base = || {
        let mut c = bin();
        c.args(["edit", "--tokens-out", "/dev/null", "--var"])
            .arg(&model)
            .arg("--image")
            .arg(&src);
        c
    };
    assert!(fail(&mut base()).contains("say what to keep: --mask"));
    assert!(fail(base().args(["--keep-scales", "0"])).contains("keep-scales must be from 1 to"));
    assert!(fail(base().args(["--keep-half", "middle"])).contains("unknown half `middle`"));
    assert!(
        fail(base().args(["--keep-half", "top", "--n", "20000"])).contains("limit of 10000 images")
    );
    let not_image = tmp("not-an-image.png");
    std::fs::write(&not_image, b"hello").unwrap();
    let err = fail(
        bin()
            .args([
                "edit",
                "--keep-half",
                "top",
                "--tokens-out",
                "/dev/null",
                "--var",
            ])
            .arg(&model)
            .arg("--image")
            .arg(&not_image),
    );
    assert!(err.contains("not-an-image.png"), "{err}");
}

/// `export --from-pack` rewrites the recommended settings; `sample` then uses them.
#[test]
fn a_repacked_pack_carries_its_recommended_settings() {
    let (_, p1) = tiny_q8_pack("repack-1", "1");
    let p2 = tmp("repack-2.nsp");
    run(bin()
        .args([
            "export",
            "--cfg",
            "2.5",
            "--top-k",
            "7",
            "--top-p",
            "0.8",
            "--default-class",
            "3",
            "--from-pack",
        ])
        .arg(&p1)
        .arg("--out")
        .arg(&p2));
    let (a, b) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    let data = |x: &[u8]| {
        let (h, d) = nextscale::pack::read_header(x).unwrap().unwrap();
        (h, x[d..].to_vec())
    };
    let ((ha, da), (hb, db)) = (data(&a), data(&b));
    assert_eq!(da, db, "weights are copied byte for byte");
    assert!(ha.sampling.is_none());
    assert_eq!(hb.sampling.as_ref().unwrap().top_k, 7);
    // Without --class, sample draws the recommended class with the recommended settings.
    let log = run(bin()
        .args(["sample", "--tokens-out", "/dev/null", "--pack"])
        .arg(&p2));
    assert!(
        log.contains("sampling with cfg 2.5 top-k 7 top-p 0.8"),
        "{log}"
    );
    let err = fail(
        bin()
            .args(["sample", "--tokens-out", "/dev/null", "--pack"])
            .arg(&p1),
    );
    assert!(err.contains("give --class or --prompt"), "{err}");
}

/// `average` writes the element-wise mean of two state dicts (float tensors; the integer ones
/// kept), a file averaged with itself is unchanged, and mismatched inputs are refused.
#[test]
fn average_is_the_mean_of_its_inputs() {
    let (a, b) = (tmp("avg-a.safetensors"), tmp("avg-b.safetensors"));
    run(bin()
        .args(["fixture", "tiny", "--seed", "1", "--out"])
        .arg(&a));
    run(bin()
        .args(["fixture", "tiny", "--seed", "2", "--out"])
        .arg(&b));
    let (ab, aa) = (tmp("avg-ab.safetensors"), tmp("avg-aa.safetensors"));
    run(bin().arg("average").arg(&a).arg(&b).arg("--out").arg(&ab));
    run(bin().arg("average").arg(&a).arg(&a).arg("--out").arg(&aa));
    let open = |p: &PathBuf| nextscale::Checkpoint::open(p).unwrap();
    let (ca, cb, cab, caa) = (open(&a), open(&b), open(&ab), open(&aa));
    let keys: Vec<&str> = ca.keys().collect();
    assert_eq!(keys, cab.keys().collect::<Vec<_>>());
    let (mut floats, mut differ) = (0, 0);
    for k in keys {
        assert_eq!(ca.shape(k), cab.shape(k), "{k}");
        if let Ok(v) = ca.read_i64(k) {
            assert_eq!(v, cab.read_i64(k).unwrap(), "{k}");
            continue;
        }
        let (x, y) = (ca.read_f32(k).unwrap().data, cb.read_f32(k).unwrap().data);
        let m = cab.read_f32(k).unwrap().data;
        for i in 0..x.len() {
            let want = ((f64::from(x[i]) + f64::from(y[i])) / 2.0) as f32;
            assert_eq!(m[i].to_bits(), want.to_bits(), "{k}[{i}]");
        }
        assert_eq!(caa.read_f32(k).unwrap().data, x, "{k}");
        floats += 1;
        differ += usize::from(x != y);
    }
    assert!(
        floats > 10 && differ > 10,
        "{floats} float tensors, {differ} differ"
    );
    // Same tokens from the file averaged with itself as from the file.
    let tokens = |var: &PathBuf, out: &str| {
        run(bin()
            .args(["sample", "--class", "3", "--seed", "5", "--tokens-out"])
            .arg(tmp(out))
            .arg("--var")
            .arg(var));
        std::fs::read_to_string(tmp(out)).unwrap()
    };
    assert_eq!(tokens(&a, "avg-a.json"), tokens(&aa, "avg-aa.json"));
    // A different model is refused by name.
    let err = fail(
        bin()
            .arg("average")
            .arg(&a)
            .arg(golden_dir().join("var_d2_random.safetensors"))
            .arg("--out")
            .arg(tmp("avg-bad.safetensors")),
    );
    assert!(err.contains("does not hold the same tensors"), "{err}");
    assert!(!tmp("avg-bad.safetensors").exists());
    // One input is written as it is; none is refused by the parser.
    let one = tmp("avg-one.safetensors");
    run(bin().arg("average").arg(&a).arg("--out").arg(&one));
    let c1 = open(&one);
    for k in ca.keys().filter(|k| ca.read_i64(k).is_err()) {
        assert_eq!(
            c1.read_f32(k).unwrap().data,
            ca.read_f32(k).unwrap().data,
            "{k}"
        );
    }
    let out = bin()
        .args(["average", "--out"])
        .arg(tmp("avg-none.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("<INPUTS>..."),
        "{err}"
    );
    assert!(!tmp("avg-none.safetensors").exists());
}

/// `average` reads a pack's models (dequantized, the VAR with the official buffers a state dict
/// carries): a q8 pack's VAR and VQ-VAE, extracted, sample the pack's tokens, and a pack
/// averages with a state dict of the same model.
#[test]
fn average_reads_the_models_of_a_pack() {
    let (tiny, pack) = tiny_q8_pack("avgp", "3");
    let (var, vae) = (tmp("avgp-var.safetensors"), tmp("avgp-vae.safetensors"));
    run(bin().arg("average").arg(&pack).arg("--out").arg(&var));
    run(bin()
        .arg("average")
        .arg(&pack)
        .args(["--part", "vae", "--out"])
        .arg(&vae));
    let open = |p: &PathBuf| nextscale::Checkpoint::open(p).unwrap();
    let (ct, cv, cq) = (open(&tiny), open(&var), open(&vae));
    let mut want_var: Vec<String> = ct
        .keys()
        .filter(|k| !k.starts_with("vae."))
        .map(String::from)
        .collect();
    want_var.extend(["lvl_1L", "attn_bias_for_masking"].map(String::from));
    let depth = ct
        .keys()
        .filter(|k| k.ends_with(".attn.proj.weight"))
        .count();
    want_var.extend((0..depth).map(|i| format!("blocks.{i}.attn.zero_k_bias")));
    want_var.sort();
    assert_eq!(cv.keys().collect::<Vec<_>>(), want_var);
    let want_vae: Vec<&str> = ct.keys().filter_map(|k| k.strip_prefix("vae.")).collect();
    assert_eq!(cq.keys().collect::<Vec<_>>(), want_vae);
    assert_eq!(
        cv.metadata().get("format").map(String::as_str),
        Some("nextscale-var")
    );
    assert_eq!(
        cq.metadata().get("format").map(String::as_str),
        Some("nextscale-vqvae")
    );
    let tokens = |src: &[&std::ffi::OsStr], out: &str| {
        run(bin()
            .args(["sample", "--class", "2", "--seed", "4", "--tokens-out"])
            .arg(tmp(out))
            .args(src));
        std::fs::read_to_string(tmp(out)).unwrap()
    };
    assert_eq!(
        tokens(&["--pack".as_ref(), pack.as_os_str()], "avgp-a.json"),
        tokens(
            &[
                "--var".as_ref(),
                var.as_os_str(),
                "--vae".as_ref(),
                vae.as_os_str()
            ],
            "avgp-b.json"
        )
    );
    // A pack and a state dict of the same model average together (here: the mean of equals).
    let mixed = tmp("avgp-mixed.safetensors");
    run(bin()
        .arg("average")
        .arg(&pack)
        .arg(&var)
        .arg("--out")
        .arg(&mixed));
    let cm = open(&mixed);
    for k in cv.keys().filter(|k| cv.read_i64(k).is_err()) {
        assert_eq!(
            cm.read_f32(k).unwrap().data,
            cv.read_f32(k).unwrap().data,
            "{k}"
        );
    }
}

/// `average` over three synthetic state dicts: the mean divides by three, integer tensors and
/// the first file's metadata are kept (with the count of inputs); files that are not the same
/// model (integers, shapes or identifying metadata differ) are refused and nothing is written.
#[test]
fn average_of_three_keeps_integers_and_metadata_and_refuses_other_models() {
    use nextscale::state_dict::{Entry, Values, write_safetensors};
    let write = |name: &str, w: [f32; 3], n: Vec<i64>, rows: usize, scales: &str| {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("format".to_string(), "nextscale-var".to_string());
        meta.insert("patch_nums".to_string(), scales.to_string());
        meta.insert("step".to_string(), name.to_string());
        let entries = vec![
            Entry::f32("w", vec![rows, 1], w[..rows].to_vec()),
            Entry {
                name: "n".into(),
                shape: vec![n.len()],
                values: Values::I64(n),
            },
        ];
        let path = tmp(&format!("avg3-{name}.safetensors"));
        let mut bytes = Vec::new();
        write_safetensors(&mut bytes, &entries, Some(&meta)).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let a = write("a", [1.0, 2.0, -3.0], vec![7, 8], 3, "[1,2]");
    let b = write("b", [2.0, 0.5, 0.0], vec![7, 8], 3, "[1,2]");
    let c = write("c", [0.5, 1.0, 4.0], vec![7, 8], 3, "[1,2]");
    let out = tmp("avg3-out.safetensors");
    run(bin()
        .arg("average")
        .args([&a, &b, &c])
        .arg("--out")
        .arg(&out));
    let m = nextscale::Checkpoint::open(&out).unwrap();
    let want: Vec<f32> = [3.5f64, 3.5, 1.0]
        .iter()
        .map(|s| (s / 3.0) as f32)
        .collect();
    assert_eq!(m.read_f32("w").unwrap().data, want);
    assert_eq!(m.read_i64("n").unwrap(), (vec![2], vec![7, 8]));
    assert_eq!(m.metadata().get("step").map(String::as_str), Some("a"));
    assert_eq!(
        m.metadata().get("patch_nums").map(String::as_str),
        Some("[1,2]")
    );
    assert_eq!(
        m.metadata().get("averaged_from").map(String::as_str),
        Some("3")
    );
    // Not one model: each refused by name, with no output file.
    let bad = [
        (
            write("ints", [1.0, 2.0, 3.0], vec![7, 9], 3, "[1,2]"),
            "integer tensor `n` differs",
        ),
        (
            write("shape", [1.0, 2.0, 3.0], vec![7, 8], 2, "[1,2]"),
            "tensor `w` has shape",
        ),
        (
            write("scales", [1.0, 2.0, 3.0], vec![7, 8], 3, "[1,3]"),
            "metadata `patch_nums` differs",
        ),
    ];
    for (i, (other, msg)) in bad.iter().enumerate() {
        let o = tmp(&format!("avg3-bad{i}.safetensors"));
        let err = fail(bin().arg("average").arg(&a).arg(other).arg("--out").arg(&o));
        assert!(err.contains(msg), "{msg}: {err}");
        assert!(!o.exists());
    }
}
