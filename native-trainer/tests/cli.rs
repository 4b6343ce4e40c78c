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
