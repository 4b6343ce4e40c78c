//! Training data: image folders (class subfolders, ImageNet style), captioned folders
//! (`metadata.jsonl` as Hugging Face imagefolder, or `metadata.csv`), and MNIST-style IDX
//! files. Images are decoded with the `image` crate (PNG, JPEG, WebP), alpha is composited on
//! white, the shorter side is resized (Lanczos3) and the centre cropped; flips are drawn from
//! the counter-based RNG, so a step's batch depends only on the seed and the data position.
//! Files that do not decode are skipped, counted and reported.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::{DynamicImage, GenericImageView};
use nextscale::rng::{CounterRng, fnv1a64, stream_id};

const IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// Image `i` of the IDX file.
    Idx(usize),
}

#[derive(Clone, Debug)]
pub struct Item {
    pub source: Source,
    pub label: Option<usize>,
    pub caption: Option<String>,
}

impl Item {
    /// A stable identity for the validation split.
    fn id(&self) -> String {
        match &self.source {
            Source::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Source::Idx(i) => format!("idx:{i}"),
        }
    }
}

struct IdxImages {
    rows: usize,
    cols: usize,
    pixels: Vec<u8>,
}

pub struct Dataset {
    pub description: String,
    pub items: Vec<Item>,
    /// Class names, index = label; empty without classes.
    pub class_names: Vec<String>,
    idx: Option<IdxImages>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Largest image file read (an image of more is skipped and counted).
pub const MAX_IMAGE_FILE: u64 = 64 << 20;
/// Largest data file (IDX, metadata), before and after gunzip.
pub const MAX_DATA_FILE: u64 = 2 << 30;
/// Largest decoded image side and decoder allocation.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Reads at most `max` bytes of a regular file (or a link to one): devices, FIFOs and
/// sockets are refused before they are opened, and larger files are refused by their length.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if meta.len() > max {
        bail!(
            "{}: {} bytes is more than the limit of {max} bytes",
            path.display(),
            meta.len()
        );
    }
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut out))
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > max {
        bail!(
            "{}: grew past the limit of {max} bytes while reading",
            path.display()
        );
    }
    Ok(out)
}

/// `name` (a `file_name` from a metadata file) under `dir`: absolute paths and `..` are
/// refused, so a metadata file never reads outside its folder.
pub fn confined(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        bail!(
            "file_name `{name}` must be a relative path inside the data folder (no `..`, not absolute)"
        );
    }
    Ok(dir.join(rel))
}

/// Decodes an image file with size limits (a decompression bomb is an error, not an abort).
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    reader
        .decode()
        .with_context(|| format!("decoding {}", path.display()))
}

/// Reads a file, gunzipping it when it starts with the gzip magic (both sizes capped).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = read_regular(path, MAX_DATA_FILE)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_DATA_FILE + 1)
            .read_to_end(&mut out)
            .with_context(|| format!("gunzipping {}", path.display()))?;
        if out.len() as u64 > MAX_DATA_FILE {
            bail!(
                "{}: gunzips to more than the limit of {MAX_DATA_FILE} bytes",
                path.display()
            );
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses one IDX file: `(dims, payload)` for unsigned-byte data.
fn parse_idx(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{}: not an unsigned-byte IDX file", path.display());
    }
    let nd = bytes[3] as usize;
    if bytes.len() < 4 + 4 * nd {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .context("IDX size overflows")?;
    let body = &bytes[4 + 4 * nd..];
    if body.len() != n {
        bail!(
            "{}: IDX header says {n} bytes of data, file has {}",
            path.display(),
            body.len()
        );
    }
    Ok((dims, body.to_vec()))
}

/// Splits one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl Dataset {
    /// Opens a folder or an IDX images file (labels from the matching `labels-idx1` file).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Self::open_idx(path);
        }
        if !path.is_dir() {
            bail!("data path {} does not exist", path.display());
        }
        let jsonl = path.join("metadata.jsonl");
        let csv = path.join("metadata.csv");
        if jsonl.is_file() {
            return Self::open_captions_jsonl(path, &jsonl);
        }
        if csv.is_file() {
            return Self::open_captions_csv(path, &csv);
        }
        let entries = sorted_entries(path)?;
        let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let mut items = Vec::new();
        let mut class_names = Vec::new();
        if !class_dirs.is_empty() {
            for dir in class_dirs {
                let label = class_names.len();
                let files: Vec<PathBuf> = sorted_entries(dir)?
                    .into_iter()
                    .filter(|p| is_image(p))
                    .collect();
                if files.is_empty() {
                    continue;
                }
                class_names.push(dir.file_name().unwrap().to_string_lossy().into_owned());
                items.extend(files.into_iter().map(|f| Item {
                    source: Source::File(f),
                    label: Some(label),
                    caption: None,
                }));
            }
        } else {
            items.extend(entries.into_iter().filter(|p| is_image(p)).map(|f| Item {
                source: Source::File(f),
                label: None,
                caption: None,
            }));
        }
        if items.is_empty() {
            bail!(
                "{}: no images (.png, .jpg, .jpeg, .webp) found, neither directly nor in class subfolders",
                path.display()
            );
        }
        let description = if class_names.is_empty() {
            format!("{} images in {}", items.len(), path.display())
        } else {
            format!(
                "{} images in {} classes in {}",
                items.len(),
                class_names.len(),
                path.display()
            )
        };
        Ok(Self {
            description,
            items,
            class_names,
            idx: None,
        })
    }

    fn open_captions_jsonl(dir: &Path, file: &Path) -> Result<Self> {
        let text = String::from_utf8(read_regular(file, MAX_DATA_FILE)?)
            .with_context(|| format!("{}: not UTF-8 text", file.display()))?;
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", file.display(), n + 1))?;
            let name = v["file_name"]
                .as_str()
                .with_context(|| format!("{}:{}: no \"file_name\"", file.display(), n + 1))?;
            let caption = ["text", "caption"]
                .iter()
                .find_map(|k| v[*k].as_str())
                .with_context(|| {
                    format!("{}:{}: no \"text\" or \"caption\"", file.display(), n + 1)
                })?;
            items.push(Item {
                source: Source::File(
                    confined(dir, name).with_context(|| format!("{}:{}", file.display(), n + 1))?,
                ),
                label: None,
                caption: Some(caption.to_string()),
            });
        }
        Self::captioned(dir, items)
    }

    fn open_captions_csv(dir: &Path, file: &Path) -> Result<Self> {
        let text = String::from_utf8(read_regular(file, MAX_DATA_FILE)?)
            .with_context(|| format!("{}: not UTF-8 text", file.display()))?;
        let mut lines = text.lines();
        let header = csv_fields(lines.next().context("empty metadata.csv")?);
        let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.trim()));
        let fcol = col(&["file_name"]).context("metadata.csv has no file_name column")?;
        let tcol =
            col(&["text", "caption"]).context("metadata.csv has no text or caption column")?;
        let mut items = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f = csv_fields(line);
            if f.len() <= fcol.max(tcol) {
                bail!("{}:{}: too few columns", file.display(), n + 2);
            }
            items.push(Item {
                source: Source::File(
                    confined(dir, &f[fcol])
                        .with_context(|| format!("{}:{}", file.display(), n + 2))?,
                ),
                label: None,
                caption: Some(f[tcol].clone()),
            });
        }
        Self::captioned(dir, items)
    }

    fn captioned(dir: &Path, items: Vec<Item>) -> Result<Self> {
        if items.is_empty() {
            bail!("{}: the metadata lists no images", dir.display());
        }
        Ok(Self {
            description: format!("{} captioned images in {}", items.len(), dir.display()),
            items,
            class_names: Vec::new(),
            idx: None,
        })
    }

    fn open_idx(path: &Path) -> Result<Self> {
        let (dims, pixels) = parse_idx(&read_maybe_gz(path)?, path)?;
        if dims.len() != 3 {
            bail!(
                "{}: expected an IDX image file [N, rows, cols], got dims {dims:?}",
                path.display()
            );
        }
        if dims[1] == 0 || dims[2] == 0 || dims[1] > 4096 || dims[2] > 4096 {
            bail!(
                "{}: IDX images of {}×{} pixels (each side must be 1 to 4096)",
                path.display(),
                dims[1],
                dims[2]
            );
        }
        let name = path.file_name().unwrap().to_string_lossy();
        let labels_path = path.with_file_name(
            name.replace("images-idx3", "labels-idx1")
                .replace("images.idx3", "labels.idx1"),
        );
        let labels = if labels_path != path && labels_path.is_file() {
            let (ld, lv) = parse_idx(&read_maybe_gz(&labels_path)?, &labels_path)?;
            if ld != [dims[0]] {
                bail!(
                    "{}: {} labels for {} images",
                    labels_path.display(),
                    ld.first().unwrap_or(&0),
                    dims[0]
                );
            }
            Some(lv)
        } else {
            None
        };
        let num_classes = labels
            .as_ref()
            .map(|l| *l.iter().max().unwrap_or(&0) as usize + 1)
            .unwrap_or(0);
        let items = (0..dims[0])
            .map(|i| Item {
                source: Source::Idx(i),
                label: labels.as_ref().map(|l| l[i] as usize),
                caption: None,
            })
            .collect();
        Ok(Self {
            description: format!(
                "{} IDX images {}×{}{} from {}",
                dims[0],
                dims[1],
                dims[2],
                if num_classes > 0 {
                    format!(", {num_classes} classes")
                } else {
                    String::new()
                },
                path.display()
            ),
            items,
            class_names: (0..num_classes).map(|c| c.to_string()).collect(),
            idx: Some(IdxImages {
                rows: dims[1],
                cols: dims[2],
                pixels,
            }),
        })
    }

    /// Splits item indices into (train, validation): an item is in validation when a hash of
    /// its name falls below `fraction` (stable when files are added).
    pub fn split(&self, fraction: f64) -> (Vec<usize>, Vec<usize>) {
        split_by_hash(self.items.len(), fraction, |i| {
            fnv1a64(self.items[i].id().as_bytes())
        })
    }

    /// Decodes item `i` to `[3, size, size]` in [−1, 1] (composited on white, resized,
    /// centre-cropped).
    pub fn load(&self, i: usize, size: usize) -> Result<Vec<f32>, String> {
        let img = match &self.items[i].source {
            Source::File(p) => {
                let bytes = read_regular(p, MAX_IMAGE_FILE).map_err(|e| format!("{e:#}"))?;
                decode_image(&bytes, p).map_err(|e| format!("{e:#}"))?
            }
            Source::Idx(k) => {
                let idx = self.idx.as_ref().expect("IDX items come with IDX data");
                let n = idx.rows * idx.cols;
                let px = idx.pixels[k * n..(k + 1) * n].to_vec();
                DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(idx.cols as u32, idx.rows as u32, px)
                        .expect("sized"),
                )
            }
        };
        to_chw(&img, size)
    }
}

/// Composites on white, resizes the shorter side to `size` (Lanczos3), centre-crops, → CHW
/// in [−1, 1]: the library's pre-processing, so editing sees images as training did.
pub fn to_chw(img: &DynamicImage, size: usize) -> Result<Vec<f32>, String> {
    let (w, h) = img.dimensions();
    let rgba = img.to_rgba8();
    nextscale::image::RgbaView::new(w as usize, h as usize, rgba.as_raw())
        .and_then(|v| v.to_chw(size, 255))
        .map_err(|e| e.to_string())
}

/// Mirrors a CHW image left–right in place.
pub fn flip_chw(img: &mut [f32], size: usize) {
    for row in img.chunks_exact_mut(size) {
        row.reverse();
    }
}

/// The data order of epoch `epoch`: a Fisher–Yates shuffle of `0..n` driven by the counter
/// RNG, so it depends only on the seed and the epoch (image and token loaders alike).
pub fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let rng = CounterRng::new(seed);
    let stream = stream_id("shuffle", epoch, 0);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.bits(stream, i as u64) % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// Where the loader is in the data: the epoch and the offset into its permutation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub offset: u64,
}

/// A batch of images with their labels and captions.
pub struct Batch {
    /// `[B, 3, size, size]`, row-major.
    pub images: Vec<f32>,
    pub labels: Vec<Option<usize>>,
    pub captions: Vec<Option<String>>,
    pub indices: Vec<usize>,
}

/// Deterministic shuffled batches over a subset of a dataset, with a decode cache.
pub struct Loader<'a> {
    pub ds: &'a Dataset,
    pub subset: Vec<usize>,
    pub size: usize,
    pub flip: bool,
    pub seed: u64,
    pub cursor: Cursor,
    /// Items that failed to decode (indices into the dataset), with the reason.
    pub bad: BTreeSet<usize>,
    pub bad_reasons: Vec<String>,
    cache: HashMap<usize, Vec<f32>>,
    cache_budget: usize,
}

impl<'a> Loader<'a> {
    pub fn new(ds: &'a Dataset, subset: Vec<usize>, size: usize, flip: bool, seed: u64) -> Self {
        let per = 3 * size * size;
        Self {
            ds,
            subset,
            size,
            flip,
            seed,
            cursor: Cursor::default(),
            bad: BTreeSet::new(),
            bad_reasons: Vec::new(),
            cache: HashMap::new(),
            cache_budget: (2usize << 30) / (4 * per).max(1),
        }
    }

    /// The permutation of epoch `e` (Fisher–Yates driven by the counter RNG).
    fn permutation(&self, epoch: u64) -> Vec<usize> {
        permutation(self.seed, epoch, self.subset.len())
    }

    /// Decodes one item (cached), or `None` when it is corrupt.
    pub fn image(&mut self, item: usize) -> Option<Vec<f32>> {
        if self.bad.contains(&item) {
            return None;
        }
        if let Some(v) = self.cache.get(&item) {
            return Some(v.clone());
        }
        match self.ds.load(item, self.size) {
            Ok(v) => {
                if self.cache.len() < self.cache_budget {
                    self.cache.insert(item, v.clone());
                }
                Some(v)
            }
            Err(e) => {
                self.bad.insert(item);
                self.bad_reasons.push(e);
                None
            }
        }
    }

    /// The next `b` decodable items from the cursor on, advancing it.
    pub fn next_batch(&mut self, b: usize) -> Result<Batch> {
        let n = self.subset.len() as u64;
        if n == 0 {
            bail!("no training images");
        }
        let mut batch = Batch {
            images: Vec::with_capacity(b * 3 * self.size * self.size),
            labels: Vec::new(),
            captions: Vec::new(),
            indices: Vec::new(),
        };
        let mut perm = self.permutation(self.cursor.epoch);
        let mut tried = 0u64;
        while batch.indices.len() < b {
            if tried > 2 * n + b as u64 {
                bail!("no decodable images: {} of {} failed", self.bad.len(), n);
            }
            tried += 1;
            let item = self.subset[perm[self.cursor.offset as usize]];
            let (epoch, offset) = (self.cursor.epoch, self.cursor.offset);
            self.cursor.offset += 1;
            if self.cursor.offset == n {
                self.cursor = Cursor {
                    epoch: self.cursor.epoch + 1,
                    offset: 0,
                };
                perm = self.permutation(self.cursor.epoch);
            }
            let Some(mut img) = self.image(item) else {
                continue;
            };
            if self.flip
                && CounterRng::new(self.seed).uniform(stream_id("flip", epoch, offset), 0) < 0.5
            {
                flip_chw(&mut img, self.size);
            }
            batch.images.extend_from_slice(&img);
            batch.labels.push(self.ds.items[item].label);
            batch.captions.push(self.ds.items[item].caption.clone());
            batch.indices.push(item);
        }
        Ok(batch)
    }
}

/// `(train, validation)` indices of `count` items: item `i` is held out when `hash(i)` mod
/// 10 000 falls below `fraction · 10 000`. With nothing left to train on, all items train.
pub fn split_by_hash(
    count: usize,
    fraction: f64,
    hash: impl Fn(usize) -> u64,
) -> (Vec<usize>, Vec<usize>) {
    let (val, mut train): (Vec<usize>, Vec<usize>) =
        (0..count).partition(|&i| ((hash(i) % 10_000) as f64) < fraction * 10_000.0);
    if train.is_empty() {
        train = val.clone();
    }
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nextscale-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn idx_images_with_gzipped_labels() {
        use std::io::Write;
        let d = tmpdir("idx");
        // 3 images of 2×2, labels 7, 0, 7; the labels file gzipped.
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
        img.extend([0, 255, 255, 0, 10, 20, 30, 40, 255, 255, 255, 255]);
        std::fs::write(d.join("t10k-images-idx3-ubyte"), &img).unwrap();
        let lab = vec![0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 7];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&lab).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), gz.finish().unwrap()).unwrap();
        // The images file refers to the labels by name, with or without .gz.
        let ds = Dataset::open(&d.join("t10k-images-idx3-ubyte")).unwrap();
        assert_eq!(ds.items.len(), 3);
        assert_eq!(ds.items[0].label, Some(7));
        assert_eq!(ds.class_names.len(), 8);
        let v = ds.load(2, 2).unwrap();
        assert!(v.iter().all(|&x| x == 1.0), "white image");
        let v = ds.load(0, 2).unwrap();
        assert_eq!((v[0], v[1]), (-1.0, 1.0));
        // A lying header is an error, not a panic.
        std::fs::write(d.join("bad-images-idx3-ubyte"), &img[..20]).unwrap();
        assert!(Dataset::open(&d.join("bad-images-idx3-ubyte")).is_err());
    }

    #[test]
    fn captions_from_jsonl_and_csv() {
        let d = tmpdir("captions");
        std::fs::write(
            d.join("metadata.jsonl"),
            "{\"file_name\": \"a.png\", \"text\": \"a red apple\"}\n{\"file_name\": \"b.png\", \"caption\": \"a cat\"}\n",
        )
        .unwrap();
        let ds = Dataset::open(&d).unwrap();
        assert_eq!(ds.items.len(), 2);
        assert_eq!(ds.items[1].caption.as_deref(), Some("a cat"));
        std::fs::remove_file(d.join("metadata.jsonl")).unwrap();
        std::fs::write(
            d.join("metadata.csv"),
            "file_name,text\na.png,\"apple, red\"\n",
        )
        .unwrap();
        let ds = Dataset::open(&d).unwrap();
        assert_eq!(ds.items[0].caption.as_deref(), Some("apple, red"));
        std::fs::write(d.join("metadata.csv"), "name,text\na.png,x\n").unwrap();
        let e = Dataset::open(&d).err().unwrap().to_string();
        assert!(e.contains("file_name"), "{e}");
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields(r#"a.png,"hello, ""world""""#),
            vec!["a.png", r#"hello, "world""#]
        );
    }

    #[test]
    fn alpha_is_composited_on_white_and_cropped() {
        let mut img = image::RgbaImage::new(4, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 2 {
                image::Rgba([0, 0, 0, 0])
            } else {
                image::Rgba([0, 0, 0, 255])
            };
        }
        let v = to_chw(&DynamicImage::ImageRgba8(img), 2).unwrap();
        // Centre crop of width 2 from 4: columns 1 (transparent → white) and 2 (black).
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], -1.0);
    }

    #[test]
    fn hostile_data_folders_are_refused_with_messages() {
        let d = tmpdir("hostile");
        // file_name outside the folder.
        for bad in ["../secret.png", "/etc/passwd", "a/../../b.png", ""] {
            std::fs::write(
                d.join("metadata.jsonl"),
                format!("{{\"file_name\": {bad:?}, \"text\": \"x\"}}\n"),
            )
            .unwrap();
            let e = format!("{:#}", Dataset::open(&d).err().expect("refused"));
            assert!(
                e.contains("must be a relative path inside the data folder"),
                "{bad}: {e}"
            );
        }
        // Devices and FIFOs are not read; oversized files are refused by their length.
        let e = format!(
            "{:#}",
            read_regular(Path::new("/dev/zero"), 10).unwrap_err()
        );
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = d.join("fifo");
        let _ = std::process::Command::new("mkfifo").arg(&fifo).status();
        if fifo.exists() {
            let e = format!("{:#}", read_regular(&fifo, 10).unwrap_err());
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::write(d.join("big.bin"), vec![0u8; 100]).unwrap();
        let e = format!("{:#}", read_regular(&d.join("big.bin"), 99).unwrap_err());
        assert!(e.contains("more than the limit of 99 bytes"), "{e}");
        // IDX images of zero size.
        let mut idx = vec![0, 0, 8, 3];
        for v in [2u32, 0, 5] {
            idx.extend_from_slice(&v.to_be_bytes());
        }
        std::fs::write(d.join("z-images-idx3-ubyte"), &idx).unwrap();
        let e = format!(
            "{:#}",
            Dataset::open(&d.join("z-images-idx3-ubyte")).err().unwrap()
        );
        assert!(e.contains("IDX images of 0×5 pixels"), "{e}");
        // A 1×4000 strip decodes but is refused before resizing (counted as a bad file).
        let strip = image::RgbImage::new(4000, 1);
        let img = DynamicImage::ImageRgb8(strip);
        assert!(to_chw(&img, 64).unwrap_err().contains("too elongated"));
    }
}
