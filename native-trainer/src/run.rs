//! A training run's folder: the resolved config, atomic checkpoints (keep the last N), the
//! latest model as an official state dict, `metrics.csv`, curves and sample grids, and the
//! progress line a user watches.
//!
//! ```text
//! RUN/config.toml            the resolved configuration (a rerun must match it)
//! RUN/checkpoints/step-N.safetensors   model + optimizer + trainer state (resume)
//! RUN/<model>.safetensors    latest weights, official state-dict format (export reads it)
//! RUN/metrics.csv            one row per logged step
//! RUN/curves.png             train/val loss and accuracy
//! RUN/samples/step-N.png     sample grids
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nextscale::state_dict::{Entry, write_safetensors};

pub struct RunDir {
    pub root: PathBuf,
    /// Held open for the life of the run: an OS advisory lock (released by the kernel when
    /// the process ends, however it ends), so two runs never share a folder. None when the
    /// folder is only read ([`RunDir::read_only`]).
    _lock: Option<std::fs::File>,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}

/// Removes temporary files (`.NAME.tmp-PID`) left in `dir` by a process that was killed.
fn remove_stale_temps(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The `__metadata__` of a safetensors file.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut f, &mut len)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!(
            "{}: header of {n} bytes is not a checkpoint",
            path.display()
        );
    }
    let mut h = vec![0u8; n as usize];
    std::io::Read::read_exact(&mut f, &mut h)?;
    let v: serde_json::Value = serde_json::from_slice(&h)?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default())
}

impl RunDir {
    /// Opens (or creates) the run folder for `config` (TOML text). A folder made with a
    /// different configuration is refused, so a rerun cannot silently mix two runs; only
    /// `steps` may change (to train longer).
    #[cfg(test)]
    pub fn open(root: &Path, config: &str, kind: &str) -> Result<Self> {
        Self::open_or_update(root, config, None, kind)
    }

    /// As [`RunDir::open`], but a folder recorded with `older` (what an earlier build wrote
    /// for the same run) is accepted too, and its `config.toml` is rewritten as `config`.
    pub fn open_or_update(
        root: &Path,
        config: &str,
        older: Option<&str>,
        kind: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(root.join("checkpoints"))
            .with_context(|| format!("creating {}", root.display()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("LOCK"))
            .with_context(|| format!("creating {}", root.join("LOCK").display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by another run (its LOCK is held); wait for it to finish or use another --out",
                root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", root.display()));
            }
        }
        remove_stale_temps(root);
        remove_stale_temps(&root.join("checkpoints"));
        let cfg_path = root.join("config.toml");
        if cfg_path.is_file() {
            let old = std::fs::read_to_string(&cfg_path)?;
            let strip = |s: &str| -> Result<toml::Table> {
                let mut t: toml::Table = toml::from_str(s)?;
                if let Some(toml::Value::Table(tr)) = t.get_mut("train") {
                    tr.remove("steps");
                }
                Ok(t)
            };
            let recorded = strip(&old)?;
            let older_fits = match older {
                Some(o) => recorded == strip(o)?,
                None => false,
            };
            let now = strip(config)?;
            if recorded != now && !older_fits {
                let hint = if recorded.get("model") != now.get("model") {
                    " (its [model] differs; a run started from --init records that checkpoint's architecture there and resumes with the same --init)"
                } else {
                    ""
                };
                bail!(
                    "{} was made with a different configuration{hint}; use a new --out folder (or delete it)\n--- in the folder:\n{old}\n--- now:\n{config}",
                    root.display()
                );
            }
        }
        let marker = root.join("KIND");
        if marker.is_file() {
            let k = std::fs::read_to_string(&marker)?;
            if k.trim() != kind {
                bail!("{} is a {} run, not {kind}", root.display(), k.trim());
            }
        }
        write_atomic(&marker, kind.as_bytes())?;
        write_atomic(&cfg_path, config.as_bytes())?;
        Ok(Self {
            root: root.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// The run folder for reading only (`--validate-only`): nothing is created, locked or
    /// rewritten, so a run training in it goes on undisturbed (its checkpoints are written
    /// atomically). A missing folder has no checkpoints. A folder of another kind of run is
    /// refused, and so is one whose recorded configuration (or `older`, as in
    /// [`RunDir::open_or_update`]) differs from `config` in what validation depends on: the
    /// model, `train.val_fraction` (which items are held out) and `train.recon`; training-only
    /// settings (steps, batch size, learning rate…) may differ.
    pub fn read_only(root: &Path, config: &str, older: Option<&str>, kind: &str) -> Result<Self> {
        let marker = root.join("KIND");
        if marker.is_file() {
            let k = std::fs::read_to_string(&marker)?;
            if k.trim() != kind {
                bail!("{} is a {} run, not {kind}", root.display(), k.trim());
            }
        }
        let cfg_path = root.join("config.toml");
        if cfg_path.is_file() {
            let recorded = std::fs::read_to_string(&cfg_path)?;
            let view = |s: &str| -> Result<Vec<Option<toml::Value>>> {
                let t: toml::Table = toml::from_str(s)?;
                let train = t.get("train").and_then(toml::Value::as_table);
                Ok(vec![
                    t.get("model").cloned(),
                    train.and_then(|tr| tr.get("val_fraction")).cloned(),
                    train.and_then(|tr| tr.get("recon")).cloned(),
                ])
            };
            let r = view(&recorded)?;
            let fits = r == view(config)? || older.map(view).transpose()?.is_some_and(|o| o == r);
            if !fits {
                bail!(
                    "{} was made with a different model, train.val_fraction or train.recon; give the run's own settings to validate it\n--- in the folder:\n{recorded}\n--- now:\n{config}",
                    root.display()
                );
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: None,
        })
    }

    /// With `--validate-only`, refuses a fresh model (no checkpoint in the folder and no
    /// starting weights: `--init`, or the frozen model an adapter or LoRA run starts from).
    /// A run with no held-out item is refused by the training loop, for every kind of run.
    pub fn check_validate_only(
        &self,
        common: &crate::args::CommonTrainArgs,
        starts_from_weights: bool,
    ) -> Result<()> {
        if !common.validate_only {
            return Ok(());
        }
        if !starts_from_weights && self.checkpoints()?.is_empty() {
            bail!(
                "nothing to validate: {} has no checkpoint and no --init was given",
                self.root.display()
            );
        }
        Ok(())
    }

    /// The run folder of a training command: opened for training (see
    /// [`RunDir::open_or_update`]), or read only with `--validate-only`.
    pub fn for_command(
        common: &crate::args::CommonTrainArgs,
        config: &str,
        older: Option<&str>,
        kind: &str,
    ) -> Result<Self> {
        if common.validate_only {
            Self::read_only(&common.out, config, older, kind)
        } else {
            Self::open_or_update(&common.out, config, older, kind)
        }
    }

    fn ckpt_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// Checkpoints present, `(step, path)`, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut v = Vec::new();
        if !self.ckpt_dir().is_dir() {
            return Ok(v);
        }
        for e in std::fs::read_dir(self.ckpt_dir())? {
            let p = e?.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("step-")
                .and_then(|r| r.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                v.push((n, p));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Writes `step-N.safetensors` atomically and deletes all but the newest `keep`.
    pub fn save_checkpoint(
        &self,
        step: u64,
        entries: &[Entry],
        meta: &BTreeMap<String, String>,
        keep: usize,
    ) -> Result<PathBuf> {
        let mut bytes = Vec::new();
        write_safetensors(&mut bytes, entries, Some(meta))?;
        let path = self.ckpt_dir().join(format!("step-{step:08}.safetensors"));
        write_atomic(&path, &bytes)?;
        let all = self.checkpoints()?;
        let keep = keep.max(1);
        if all.len() > keep {
            for (_, p) in &all[..all.len() - keep] {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(path)
    }

    /// The newest readable checkpoint's trainer state (its `trainer` metadata) and tensors,
    /// if any: a checkpoint that fails to parse (torn by a crash, damaged) is reported and the
    /// next older one is tried.
    pub fn resume<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(T, nextscale::Checkpoint)>> {
        let all = self.checkpoints()?;
        let n = all.len();
        for (i, (step, path)) in all.into_iter().rev().enumerate() {
            let read = || -> Result<(T, nextscale::Checkpoint)> {
                let meta = read_metadata(&path)?;
                let state = serde_json::from_str(
                    meta.get("trainer")
                        .context("checkpoint has no trainer state")?,
                )
                .context("trainer state")?;
                Ok((state, nextscale::Checkpoint::open(&path)?))
            };
            match read() {
                Ok(r) => {
                    eprintln!("resuming from {} (step {step})", path.display());
                    return Ok(Some(r));
                }
                Err(e) if i + 1 < n => eprintln!(
                    "warning: {} is unreadable ({e:#}); trying the previous checkpoint",
                    path.display()
                ),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "no readable checkpoint in {} to resume from",
                            self.ckpt_dir().display()
                        )
                    });
                }
            }
        }
        Ok(None)
    }

    /// Writes a checkpoint for resuming: the model's state dict under `model.`, the other
    /// tensors (optimizer moments…) as given, and `trainer` (step, data position…) in the
    /// metadata.
    pub fn save_state(
        &self,
        step: u64,
        model: Vec<Entry>,
        extra: Vec<Entry>,
        mut meta: BTreeMap<String, String>,
        trainer: &impl serde::Serialize,
        keep: usize,
    ) -> Result<PathBuf> {
        let mut entries: Vec<Entry> = model
            .into_iter()
            .map(|mut e| {
                e.name = format!("model.{}", e.name);
                e
            })
            .collect();
        entries.extend(extra);
        meta.insert("trainer".into(), serde_json::to_string(trainer)?);
        self.save_checkpoint(step, &entries, &meta, keep)
    }

    /// Writes a plain state dict (official format) atomically.
    pub fn save_model(
        &self,
        name: &str,
        entries: &[Entry],
        meta: &BTreeMap<String, String>,
    ) -> Result<PathBuf> {
        let mut bytes = Vec::new();
        write_safetensors(&mut bytes, entries, Some(meta))?;
        let path = self.root.join(name);
        write_atomic(&path, &bytes)?;
        Ok(path)
    }
}

/// `metrics.csv`: a fixed header, one row per logged step; on resume, rows after the
/// resumed step are dropped so the file never holds two histories.
pub struct Metrics {
    path: PathBuf,
    columns: Vec<String>,
    /// All rows (for the curves): `(step, values)`, `NaN` where a column was not logged.
    pub rows: Vec<(u64, Vec<f64>)>,
}

impl Metrics {
    pub fn open(root: &Path, columns: &[&str], resume_step: u64) -> Result<Self> {
        let path = root.join("metrics.csv");
        let columns: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
        let mut rows = Vec::new();
        if path.is_file() {
            let text = std::fs::read_to_string(&path)?;
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
            if header.len() == columns.len() + 1
                && header[1..].iter().zip(&columns).all(|(a, b)| a == b)
            {
                for l in lines {
                    let f: Vec<&str> = l.split(',').collect();
                    // A row torn by a crash (too few fields) is dropped.
                    if f.len() != columns.len() + 1 {
                        continue;
                    }
                    let Ok(step) = f[0].parse::<u64>() else {
                        continue;
                    };
                    if step > resume_step {
                        continue;
                    }
                    let vals = f[1..]
                        .iter()
                        .map(|s| s.parse::<f64>().unwrap_or(f64::NAN))
                        .collect();
                    rows.push((step, vals));
                }
            }
        }
        let m = Self {
            path,
            columns,
            rows,
        };
        m.rewrite()?;
        Ok(m)
    }

    fn rewrite(&self) -> Result<()> {
        let mut s = String::from("step");
        for c in &self.columns {
            s.push(',');
            s.push_str(c);
        }
        s.push('\n');
        for (step, vals) in &self.rows {
            s.push_str(&Self::line(*step, vals));
        }
        write_atomic(&self.path, s.as_bytes())
    }

    fn line(step: u64, vals: &[f64]) -> String {
        let mut s = step.to_string();
        for v in vals {
            s.push(',');
            if v.is_finite() {
                s.push_str(&format!("{v:.6}"));
            }
        }
        s.push('\n');
        s
    }

    /// Appends a row; `values` are `(column, value)`, other columns stay empty.
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut row = vec![f64::NAN; self.columns.len()];
        for (k, v) in values {
            let i = self
                .columns
                .iter()
                .position(|c| c == k)
                .with_context(|| format!("metric {k} is not a column"))?;
            row[i] = *v;
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(Self::line(step, &row).as_bytes())?;
        self.rows.push((step, row));
        Ok(())
    }

    /// `(step, value)` of one column where it was logged.
    pub fn series(&self, column: &str) -> Vec<(f64, f64)> {
        let Some(i) = self.columns.iter().position(|c| c == column) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter(|(_, v)| v[i].is_finite())
            .map(|(s, v)| (*s as f64, v[i]))
            .collect()
    }
}

/// One status line: a bar, the step, named values, it/s and ETA. Redrawn in place on a
/// terminal, printed every `every` steps otherwise.
pub struct Progress {
    total: u64,
    start_step: u64,
    t0: Instant,
    tty: bool,
    every: u64,
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    pub fn new(start_step: u64, total: u64) -> Self {
        use std::io::IsTerminal;
        Self {
            total,
            start_step,
            t0: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            every: (total / 50).max(1),
        }
    }

    pub fn update(&self, step: u64, values: &[(&str, f64)]) {
        let done = step.saturating_sub(self.start_step);
        let el = self.t0.elapsed().as_secs_f64();
        let rate = if el > 0.0 { done as f64 / el } else { 0.0 };
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(step)) as f64 / rate
        } else {
            0.0
        };
        let w = 24usize;
        let fill = ((step as f64 / self.total.max(1) as f64) * w as f64).round() as usize;
        let bar: String = (0..w).map(|i| if i < fill { '=' } else { ' ' }).collect();
        let vals: String = values.iter().map(|(k, v)| format!(" {k} {v:.4}")).collect();
        let line = format!(
            "[{bar}] {step}/{}{vals} | {rate:.2} it/s | ETA {}",
            self.total,
            hms(eta)
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            if step >= self.total {
                eprintln!();
            }
        } else if step.is_multiple_of(self.every)
            || step >= self.total
            || step == self.start_step + 1
        {
            eprintln!("{line}");
        }
    }

    /// Prints a message on its own line (keeps the bar intact on a terminal).
    pub fn note(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{msg}");
    }
}

/// A model file: a checkpoint (safetensors or `.pth`; a run's `checkpoints/step-N.safetensors`
/// gives its model), or one model of a nextscale pack
/// (`part` = `"var"` or `"vae"`), so that a shipped pack can be fine-tuned, adapted or
/// re-exported directly.
pub fn open_model(path: &std::path::Path, part: &str) -> anyhow::Result<nextscale::Checkpoint> {
    use anyhow::Context;
    use std::io::Read;
    let mut magic = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("reading {}", path.display()))?;
    if !nextscale::pack::Pack::is_pack(&magic[..n]) {
        let mut ck = nextscale::Checkpoint::open(path)
            .with_context(|| format!("reading {}", path.display()))?;
        // A run's checkpoint (`checkpoints/step-N.safetensors`) keeps the model under `model.`
        // beside the optimizer state: any of them can start another run or be exported.
        if ck.metadata().contains_key("trainer") && ck.keys().any(|k| k.starts_with("model.")) {
            return Ok(ck.split_prefix("model."));
        }
        return Ok(ck);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let pack = nextscale::pack::Pack::from_bytes(bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    pack.model_checkpoint(part)
        .with_context(|| format!("reading the {part} of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nextscale-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_folder_read_only_is_not_touched_and_may_be_in_use() {
        let missing = tmp("read-only-missing");
        let cfg = "[model]\ndepth = 2\n[train]\nsteps = 1\nval_fraction = 0.1\n";
        let r = RunDir::read_only(&missing, cfg, None, "var").unwrap();
        assert!(r.checkpoints().unwrap().is_empty());
        assert!(!missing.exists(), "nothing is created");
        let d = tmp("read-only");
        let training = RunDir::open(&d, cfg, "var").unwrap();
        std::fs::write(d.join("checkpoints/step-00000003.safetensors"), b"x").unwrap();
        let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
        // The lock is held by the training run; reading goes on beside it.
        // Training-only settings may differ; what validation depends on may not.
        let other_batch =
            "[model]\ndepth = 2\n[train]\nsteps = 5\nbatch_size = 3\nval_fraction = 0.1\n";
        let r = RunDir::read_only(&d, other_batch, None, "var").unwrap();
        assert_eq!(r.checkpoints().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_to_string(d.join("config.toml")).unwrap(),
            config
        );
        for other in [
            "[model]\ndepth = 3\n[train]\nsteps = 1\nval_fraction = 0.1\n",
            "[model]\ndepth = 2\n[train]\nsteps = 1\nval_fraction = 0.5\n",
        ] {
            let e = RunDir::read_only(&d, other, None, "var")
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("was made with a different model"), "{e}");
            // ... unless it is what an earlier build recorded for the same run.
            RunDir::read_only(&d, other, Some(cfg), "var").unwrap();
        }
        let e = RunDir::read_only(&d, cfg, None, "lora")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is a var run, not lora"), "{e}");
        drop(training);
    }

    #[test]
    fn a_second_run_on_the_same_folder_is_refused_and_stale_temps_go() {
        let d = tmp("lock");
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        std::fs::write(
            d.join("checkpoints/.step-00000010.safetensors.tmp-99"),
            b"x",
        )
        .unwrap();
        let a = RunDir::open(&d, "[train]\nsteps = 1\n", "var").unwrap();
        assert!(
            !d.join("checkpoints/.step-00000010.safetensors.tmp-99")
                .exists()
        );
        let e = RunDir::open(&d, "[train]\nsteps = 1\n", "var")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is in use by another run"), "{e}");
        drop(a);
        RunDir::open(&d, "[train]\nsteps = 1\n", "var").unwrap();
    }

    #[test]
    fn a_folder_in_an_older_record_is_accepted_and_rewritten() {
        let d = tmp("older");
        let (older, now) = ("[model]\ndepth = 3\n", "[model]\ndepth = 4\n");
        drop(RunDir::open(&d, older, "var").unwrap());
        let e = RunDir::open(&d, now, "var").err().unwrap().to_string();
        assert!(e.contains("different configuration"), "{e}");
        drop(RunDir::open_or_update(&d, now, Some(older), "var").unwrap());
        assert_eq!(std::fs::read_to_string(d.join("config.toml")).unwrap(), now);
        // Once rewritten, the older record no longer fits it, and a third one never did.
        drop(RunDir::open(&d, now, "var").unwrap());
        assert!(RunDir::open(&d, older, "var").is_err());
        assert!(RunDir::open_or_update(&d, "[model]\ndepth = 5\n", Some(older), "var").is_err());
    }

    #[test]
    fn a_run_checkpoint_opens_as_its_model() {
        let d = tmp("open-model");
        let run = RunDir::open(&d, "[train]\nsteps = 9\n", "var").unwrap();
        let w = Entry::f32("w", vec![2], vec![1.0, 2.0]);
        let m = Entry::f32("adam.m.w", vec![2], vec![0.0, 0.0]);
        let path = run
            .save_state(10, vec![w], vec![m], BTreeMap::new(), &10u64, 3)
            .unwrap();
        let ck = open_model(&path, "var").unwrap();
        assert_eq!(ck.keys().collect::<Vec<_>>(), ["w"]);
        assert_eq!(ck.read_f32("w").unwrap().data, [1.0, 2.0]);
    }

    #[test]
    fn resume_falls_back_to_the_newest_readable_checkpoint_and_torn_rows_are_dropped() {
        let d = tmp("resume");
        let run = RunDir::open(&d, "[train]\nsteps = 9\n", "var").unwrap();
        let e = |v: f32| Entry::f32("w", vec![2], vec![v, v]);
        run.save_state(10, vec![e(1.0)], vec![], BTreeMap::new(), &10u64, 3)
            .unwrap();
        let newest = run
            .save_state(20, vec![e(2.0)], vec![], BTreeMap::new(), &20u64, 3)
            .unwrap();
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        let (step, _) = run.resume::<u64>().unwrap().unwrap();
        assert_eq!(step, 10);
        std::fs::write(
            d.join("metrics.csv"),
            "step,loss,acc\n5,1.0,0.5\n10,0.9,0.6\n15,0.8\n",
        )
        .unwrap();
        let m = Metrics::open(&d, &["loss", "acc"], 20).unwrap();
        assert_eq!(m.rows.len(), 2);
    }
}
