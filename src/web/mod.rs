//! WebAssembly bindings: a thin wasm-bindgen layer over [`Pipeline`]. Fetching, caching,
//! progress and the Web Worker live in the JavaScript package (`pkg-config/js/`).
//!
//! Every failure rejects the returned promise with an `Error` whose message says what is
//! wrong; cancellation rejects with an `Error` named `AbortError`.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8ClampedArray, Uint32Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::condition::Condition;
use crate::edit::Region;
use crate::image::{RgbImage, RgbaView};
use crate::pipeline::Pipeline;
use crate::sampler::{NoHooks, SampleOptions};

#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(
            &format!("nextscale panicked (a bug, please report): {info}").into(),
        );
    }));
    let _ = log::set_logger(&CONSOLE_LOGGER).map(|()| log::set_max_level(log::LevelFilter::Warn));
}

struct ConsoleLogger;
static CONSOLE_LOGGER: ConsoleLogger = ConsoleLogger;
impl log::Log for ConsoleLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        let msg = format!("[{}] {}", r.target(), r.args());
        if r.level() == log::Level::Error {
            web_sys::console::error_1(&msg.into());
        } else {
            web_sys::console::warn_1(&msg.into());
        }
    }
    fn flush(&self) {}
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

fn abort_err() -> JsValue {
    let e = js_sys::Error::new("generation was cancelled");
    e.set_name("AbortError");
    e.into()
}

thread_local! {
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[cfg(feature = "webgpu")]
async fn webgpu_device() -> Result<Device, String> {
    if let Some(d) = WEBGPU.with(|w| w.borrow().clone()) {
        return Ok(d);
    }
    let d = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| format!("WebGPU is unavailable: {e:?}"))?;
    WEBGPU.with(|w| *w.borrow_mut() = Some(d.clone()));
    Ok(d)
}

#[cfg(not(feature = "webgpu"))]
async fn webgpu_device() -> Result<Device, String> {
    WEBGPU.with(|_| ());
    Err("this build has no WebGPU support".into())
}

async fn device_for(backend: &str) -> Result<(Device, &'static str), JsValue> {
    match backend {
        "cpu" => Ok((Device::flex(), "cpu")),
        "webgpu" => webgpu_device().await.map(|d| (d, "webgpu")).map_err(js_err),
        "auto" => match webgpu_device().await {
            Ok(d) => Ok((d, "webgpu")),
            Err(e) => {
                web_sys::console::warn_1(&format!("{e}; using the CPU").into());
                Ok((Device::flex(), "cpu"))
            }
        },
        other => Err(js_err(format!(
            "backend must be 'webgpu', 'cpu' or 'auto', got '{other}'"
        ))),
    }
}

struct Inner {
    pipe: Pipeline,
    backend: &'static str,
}

/// A loaded model, ready to generate.
#[wasm_bindgen]
pub struct Generator {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Generator {
    /// Parses weight-file bytes (a nextscale pack, or safetensors holding the VAR and, under
    /// `vae.`, its VQ-VAE) and uploads them to the chosen backend: `"webgpu"`, `"cpu"` or `"auto"`.
    #[wasm_bindgen(js_name = fromBytes)]
    pub async fn from_bytes(bytes: Vec<u8>, backend: String) -> Result<Generator, JsValue> {
        let (device, backend) = device_for(&backend).await?;
        let pipe = Pipeline::from_bytes(bytes, &device).map_err(js_err)?;
        if !pipe.can_decode() {
            return Err(js_err(
                "the weight file holds no VQ-VAE decoder: images cannot be made",
            ));
        }
        Ok(Generator {
            inner: Rc::new(Inner { pipe, backend }),
        })
    }

    /// The backend in use: `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.inner.backend.into()
    }

    /// What the model is: depth, width, classes, vocabulary, scales, image size.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> JsValue {
        let p = &self.inner.pipe;
        let c = &p.var_config;
        let o = Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&o, &k.into(), &v);
        };
        set("depth", c.depth.into());
        set("width", c.embed_dim.into());
        set("heads", c.num_heads.into());
        set("numClasses", c.num_classes.into());
        set("vocabSize", c.vocab_size.into());
        set(
            "patchNums",
            c.patch_nums
                .0
                .iter()
                .map(|&p| JsValue::from(p))
                .collect::<Array>()
                .into(),
        );
        set("imageSize", p.image_size().into());
        set("parameters", (c.num_params() as f64).into());
        set("hasTextEncoder", p.text.is_some().into());
        set("takesPrompts", p.takes_prompts().into());
        set(
            "classNames",
            match &p.class_names {
                Some(n) => n.iter().map(JsValue::from).collect::<Array>().into(),
                None => JsValue::NULL,
            },
        );
        // The settings generate() uses when an option is absent (the pack's recommended ones,
        // else the official defaults), and the model's showcase prompt or class.
        let d = p.default_options();
        let s = Object::new();
        // f32 settings as the decimals they were written with (0.9, not 0.8999999761581421).
        let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
        let _ = Reflect::set(&s, &"cfg".into(), &dec(d.cfg).into());
        let _ = Reflect::set(&s, &"topK".into(), &d.top_k.into());
        let _ = Reflect::set(&s, &"topP".into(), &dec(d.top_p).into());
        let r = p.recommended.as_ref();
        let _ = Reflect::set(
            &s,
            &"prompt".into(),
            &r.and_then(|r| r.prompt.clone())
                .map_or(JsValue::NULL, JsValue::from),
        );
        let _ = Reflect::set(
            &s,
            &"classLabel".into(),
            &r.and_then(|r| r.class).map_or(JsValue::NULL, JsValue::from),
        );
        let _ = Reflect::set(&s, &"fromPack".into(), &r.is_some().into());
        set("sampling", s.into());
        o.into()
    }

    /// Generates one image. Options: `classLabel` or (for models that take text) `prompt`,
    /// `cfg`, `topK`, `topP`, `seed`,
    /// `moreSmooth`, `signal` (AbortSignal), `onScale` (called after each scale with a preview).
    /// Resolves to `{width, height, rgba, tokens, timings, backend}`.
    pub fn generate(&self, options: JsValue) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move { run_generate(&inner, options).await })
    }
}

/// An edit's source: RGBA bytes, its size, and what to keep.
struct EditArgs {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
    region: EditRegion,
}

enum EditRegion {
    Mask {
        width: usize,
        height: usize,
        rgba: Vec<u8>,
    },
    KeepScales(usize),
    Half(crate::edit::Half),
}

struct GenArgs {
    cond: Condition,
    opts: SampleOptions,
    edit: Option<EditArgs>,
    signal: Option<web_sys::AbortSignal>,
    on_scale: Option<Function>,
}

const KNOWN: [&str; 13] = [
    "classLabel",
    "prompt",
    "cfg",
    "topK",
    "topP",
    "seed",
    "moreSmooth",
    "signal",
    "onScale",
    "image",
    "mask",
    "keepScales",
    "keepHalf",
];

/// `{ width, height, data }` with `data` a Uint8Array or Uint8ClampedArray of unpremultiplied
/// RGBA (what the JS package makes of ImageData, canvases, bitmaps and blobs).
fn rgba_option(o: &JsValue, key: &str) -> Result<Option<(usize, usize, Vec<u8>)>, JsValue> {
    let Some(v) = present(o, key)? else {
        return Ok(None);
    };
    let bad = || {
        js_err(format!(
            "option {key} must be {{ width, height, data }} with RGBA bytes"
        ))
    };
    if !v.is_object() {
        return Err(bad());
    }
    let w = integer(&v, "width", 16384.0)
        .map_err(|_| bad())?
        .ok_or_else(bad)? as usize;
    let h = integer(&v, "height", 16384.0)
        .map_err(|_| bad())?
        .ok_or_else(bad)? as usize;
    let data = present(&v, "data")?.ok_or_else(bad)?;
    let bytes = if data.is_instance_of::<js_sys::Uint8Array>()
        || data.is_instance_of::<Uint8ClampedArray>()
    {
        js_sys::Uint8Array::new(&data).to_vec()
    } else {
        return Err(bad());
    };
    if bytes.len() != w * h * 4 {
        return Err(js_err(format!(
            "option {key}: {w}×{h} RGBA needs {} bytes, got {}",
            w * h * 4,
            bytes.len()
        )));
    }
    Ok(Some((w, h, bytes)))
}

fn parse_edit(options: &JsValue, num_scales: usize) -> Result<Option<EditArgs>, JsValue> {
    let image = rgba_option(options, "image")?;
    let mask = rgba_option(options, "mask")?;
    let keep_scales = integer(options, "keepScales", num_scales as f64)?;
    let half = match present(options, "keepHalf")? {
        None => None,
        Some(v) => Some(
            v.as_string()
                .ok_or_else(|| js_err("option keepHalf must be 'top', 'bottom', 'left' or 'right'"))
                .and_then(|s| crate::edit::Half::parse(&s).map_err(js_err))?,
        ),
    };
    let given = mask.is_some() as u8 + keep_scales.is_some() as u8 + half.is_some() as u8;
    let Some((width, height, rgba)) = image else {
        if given > 0 {
            return Err(js_err(
                "mask, keepScales and keepHalf edit an image: give image too",
            ));
        }
        return Ok(None);
    };
    if given != 1 {
        return Err(js_err(
            "an edit needs exactly one of mask (white = regenerate), keepScales or keepHalf",
        ));
    }
    let region = if let Some((width, height, rgba)) = mask {
        EditRegion::Mask {
            width,
            height,
            rgba,
        }
    } else if let Some(k) = keep_scales {
        if k < 1.0 {
            return Err(js_err(format!(
                "option keepScales must be an integer from 1 to {num_scales}, got {k}"
            )));
        }
        EditRegion::KeepScales(k as usize)
    } else {
        EditRegion::Half(half.expect("one was given"))
    };
    Ok(Some(EditArgs {
        width,
        height,
        rgba,
        region,
    }))
}

/// The option `key`, or `None` when it is absent (`undefined` or `null`).
fn present(o: &JsValue, key: &str) -> Result<Option<JsValue>, JsValue> {
    let v = Reflect::get(o, &key.into())?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

fn number(o: &JsValue, key: &str) -> Result<Option<f64>, JsValue> {
    match present(o, key)?.map(|v| v.as_f64()) {
        None => Ok(None),
        Some(Some(x)) if x.is_finite() => Ok(Some(x)),
        Some(_) => Err(js_err(format!("option {key} must be a finite number"))),
    }
}

fn integer(o: &JsValue, key: &str, max: f64) -> Result<Option<f64>, JsValue> {
    match number(o, key)? {
        Some(x) if x.fract() != 0.0 || x < 0.0 || x > max => Err(js_err(format!(
            "option {key} must be an integer from 0 to {max}, got {x}"
        ))),
        other => Ok(other),
    }
}

fn parse_args(
    options: &JsValue,
    num_classes: usize,
    num_scales: usize,
    takes_prompts: bool,
    d: SampleOptions,
) -> Result<GenArgs, JsValue> {
    if !options.is_object() {
        return Err(js_err(
            "generate() takes an options object, e.g. { classLabel: 3 }",
        ));
    }
    for k in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let k = k.as_string().unwrap_or_default();
        if !KNOWN.contains(&k.as_str()) {
            return Err(js_err(format!(
                "unknown option '{k}' (known: {})",
                KNOWN.join(", ")
            )));
        }
    }
    let prompt = match present(options, "prompt")? {
        None => None,
        Some(v) => {
            let p = v
                .as_string()
                .ok_or_else(|| js_err("option prompt must be a string"))?;
            if p.trim().is_empty() {
                return Err(js_err("option prompt is empty"));
            }
            Some(p)
        }
    };
    let label = integer(options, "classLabel", num_classes as f64)?;
    let edit = parse_edit(options, num_scales)?;
    let cond = match (label, prompt) {
        (Some(_), Some(_)) => {
            return Err(js_err("give either classLabel or prompt, not both"));
        }
        (None, Some(p)) if takes_prompts => Condition::Prompt(p),
        (None, Some(_)) => {
            return Err(js_err(
                "this model has no text encoder: use classLabel, not prompt",
            ));
        }
        (Some(l), None) => Condition::Class(l as usize),
        // An edit without a condition is unconditional in-/out-painting.
        (None, None) if edit.is_some() => Condition::Unconditional,
        (None, None) if takes_prompts => {
            return Err(js_err(
                "prompt is required (or classLabel for unconditional)",
            ));
        }
        (None, None) => {
            return Err(js_err(format!(
                "classLabel is required (0..{} or {num_classes} for unconditional)",
                num_classes.saturating_sub(1)
            )));
        }
    };
    let more_smooth = match present(options, "moreSmooth")? {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| js_err("option moreSmooth must be a boolean"))?,
    };
    let signal = present(options, "signal")?
        .map(|v| v.dyn_into::<web_sys::AbortSignal>())
        .transpose()
        .map_err(|_| js_err("option signal must be an AbortSignal"))?;
    let on_scale = present(options, "onScale")?
        .map(|v| v.dyn_into::<Function>())
        .transpose()
        .map_err(|_| js_err("option onScale must be a function"))?;
    Ok(GenArgs {
        cond,
        edit,
        opts: SampleOptions {
            cfg: number(options, "cfg")?.map_or(d.cfg, |x| x as f32),
            top_k: integer(options, "topK", 1e9)?.map_or(d.top_k, |x| x as usize),
            top_p: number(options, "topP")?.map_or(d.top_p, |x| x as f32),
            seed: integer(options, "seed", 9_007_199_254_740_991.0)?.map_or(d.seed, |x| x as u64),
            more_smooth,
        },
        signal,
        on_scale,
    })
}

/// Lets the event loop run (messages, abort events) between scales.
async fn yield_now() {
    let p = Promise::new(&mut |resolve, _| {
        let g = js_sys::global();
        if let Ok(f) = Reflect::get(&g, &"setTimeout".into()).and_then(|f| f.dyn_into::<Function>())
        {
            let _ = f.call2(&g, &resolve, &0.into());
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(p).await;
}

fn image_object(im: &RgbImage) -> Object {
    let o = Object::new();
    let rgba = Uint8ClampedArray::from(im.to_rgba().as_slice());
    let _ = Reflect::set(&o, &"width".into(), &im.width.into());
    let _ = Reflect::set(&o, &"height".into(), &im.height.into());
    let _ = Reflect::set(&o, &"rgba".into(), &rgba.into());
    o
}

async fn run_generate(inner: &Inner, options: JsValue) -> Result<JsValue, JsValue> {
    let pipe = &inner.pipe;
    let args = parse_args(
        &options,
        pipe.var_config.num_classes,
        pipe.var_config.patch_nums.num_scales(),
        pipe.takes_prompts(),
        pipe.default_options(),
    )?;
    let aborted = |s: &Option<web_sys::AbortSignal>| s.as_ref().is_some_and(|s| s.aborted());
    if aborted(&args.signal) {
        return Err(abort_err());
    }
    let t0 = js_sys::Date::now();
    let conds = [args.cond.clone()];
    let mut sampling = match &args.edit {
        None => pipe.start_with(&conds, &args.opts).map_err(js_err)?,
        Some(e) => {
            let source = RgbaView::new(e.width, e.height, &e.rgba).map_err(js_err)?;
            let region = match &e.region {
                EditRegion::Mask {
                    width,
                    height,
                    rgba,
                } => Region::Mask(
                    pipe.mask_from_rgba(&RgbaView::new(*width, *height, rgba).map_err(js_err)?)
                        .map_err(js_err)?,
                ),
                EditRegion::KeepScales(k) => Region::KeepScales(*k),
                EditRegion::Half(h) => Region::Mask(h.mask(pipe.var_config.patch_nums.latent())),
            };
            let plan = pipe.plan_edit(&source, &region, 1).await.map_err(js_err)?;
            pipe.start_edit(&conds, &args.opts, plan).map_err(js_err)?
        }
    };
    let num_scales = sampling.num_scales();
    let scale_ms = Array::new();
    let mut last = t0;
    while let Some(si) = sampling.step(&mut NoHooks).await.map_err(js_err)? {
        if let Some(cb) = &args.on_scale {
            let preview = pipe
                .decode_fhat(sampling.f_hat().clone())
                .await
                .map_err(js_err)?;
            let ev = image_object(&preview[0]);
            let _ = Reflect::set(&ev, &"scale".into(), &si.into());
            let _ = Reflect::set(&ev, &"numScales".into(), &num_scales.into());
            let _ = Reflect::set(
                &ev,
                &"patch".into(),
                &pipe.var_config.patch_nums.0[si].into(),
            );
            cb.call1(&JsValue::NULL, &ev)?;
        }
        let now = js_sys::Date::now();
        scale_ms.push(&(now - last).into());
        last = now;
        yield_now().await;
        if aborted(&args.signal) {
            return Err(abort_err());
        }
    }
    let sample_ms = js_sys::Date::now() - t0;
    let g = sampling.finish();
    let t1 = js_sys::Date::now();
    let images = pipe.decode(&g).await.map_err(js_err)?;
    let decode_ms = js_sys::Date::now() - t1;
    let out = image_object(&images[0]);
    let _ = Reflect::set(
        &out,
        &"tokens".into(),
        &Uint32Array::from(g.tokens[0].as_slice()).into(),
    );
    let timings = Object::new();
    let _ = Reflect::set(&timings, &"scalesMs".into(), &scale_ms.into());
    let _ = Reflect::set(&timings, &"sampleMs".into(), &sample_ms.into());
    let _ = Reflect::set(&timings, &"decodeMs".into(), &decode_ms.into());
    let _ = Reflect::set(
        &timings,
        &"totalMs".into(),
        &(js_sys::Date::now() - t0).into(),
    );
    let _ = Reflect::set(&out, &"timings".into(), &timings.into());
    let _ = Reflect::set(&out, &"backend".into(), &inner.backend.into());
    Ok(out.into())
}
