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

use serde::Serialize;

use crate::edit::Region;
use crate::image::{RgbImage, RgbaView};
use crate::pipeline::Pipeline;
use crate::request::{EditRegion, GenerateRequest, Resolved};
use crate::sampler::NoHooks;

/// The threaded CPU module's pool: `initThreadPool(n)` in JavaScript starts `n` Web Workers
/// sharing this module's memory, which rayon (and so burn's CPU backend) then uses.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

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

/// A model file arriving in pieces, written straight into wasm memory: the JavaScript side
/// never holds the whole file, and on the CPU the q8/q4 weights stay in these bytes.
#[wasm_bindgen]
pub struct PackBuffer {
    bytes: Vec<u8>,
}

#[wasm_bindgen]
impl PackBuffer {
    /// An empty buffer; `expected` (the announced size, 0 if unknown) is reserved up front
    /// so the file is not copied as it grows. Refuses what wasm memory cannot hold.
    #[wasm_bindgen(constructor)]
    pub fn new(expected: f64) -> Result<PackBuffer, JsValue> {
        let mut bytes = Vec::new();
        if expected.is_finite() && expected > 0.0 {
            if expected > u32::MAX as f64 {
                return Err(js_err(format!(
                    "a model file of {expected} bytes cannot fit in wasm memory (4 GB)"
                )));
            }
            bytes.try_reserve_exact(expected as usize).map_err(|_| {
                js_err(format!(
                    "not enough wasm memory for a model file of {expected} bytes"
                ))
            })?;
        }
        Ok(PackBuffer { bytes })
    }

    /// Appends one piece of the file.
    pub fn append(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        self.bytes.try_reserve(chunk.len()).map_err(|_| {
            js_err(format!(
                "not enough wasm memory for the model file ({} bytes received)",
                self.bytes.len() + chunk.len()
            ))
        })?;
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> f64 {
        self.bytes.len() as f64
    }
}

/// A loaded model, ready to generate.
#[wasm_bindgen]
pub struct Generator {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Generator {
    /// Parses the weight file received into `buffer` (a nextscale pack, or safetensors holding
    /// the VAR and, under `vae.`, its VQ-VAE; consumed, not copied) and builds the model on the
    /// chosen backend: `"webgpu"`, `"cpu"` or `"auto"`.
    #[wasm_bindgen(js_name = fromBuffer)]
    pub async fn from_buffer(buffer: PackBuffer, backend: String) -> Result<Generator, JsValue> {
        let (device, backend) = device_for(&backend).await?;
        let pipe = Pipeline::from_bytes(buffer.bytes, &device).map_err(js_err)?;
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

    /// What the model is: depth, width, classes (and their names), vocabulary, scales,
    /// image size, and the settings `generate()` uses for absent options.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let ser = serde_wasm_bindgen::Serializer::json_compatible();
        self.inner.pipe.info().serialize(&ser).map_err(js_err)
    }

    /// Generates (or edits) one image. `options`: `classLabel` or `prompt`, `cfg`, `topK`,
    /// `topP`, `seed`, `moreSmooth`, and for an edit `image` with one of `mask`, `keepScales`,
    /// `keepHalf` (see [`crate::request`]); `onScale` is called after each scale with a
    /// preview (decoded only when `previews` is not false), `signal` cancels between scales. Resolves to
    /// `{width, height, rgba, tokens, timings, backend}`.
    pub fn generate(
        &self,
        options: JsValue,
        on_scale: Option<Function>,
        signal: Option<web_sys::AbortSignal>,
        previews: Option<bool>,
    ) -> Promise {
        let inner = self.inner.clone();
        let previews = previews.unwrap_or(true);
        future_to_promise(
            async move { run_generate(&inner, options, on_scale, signal, previews).await },
        )
    }
}

/// The options object through serde, checked by the library.
fn parse_request(options: &JsValue, pipe: &Pipeline) -> Result<Resolved, JsValue> {
    if !options.is_object() {
        return Err(js_err(
            "generate() takes an options object, e.g. { classLabel: 3 }",
        ));
    }
    let keys: Vec<String> = Object::keys(options.unchecked_ref::<Object>())
        .iter()
        .filter_map(|k| k.as_string())
        .collect();
    GenerateRequest::check_keys(keys.iter().map(String::as_str)).map_err(js_err)?;
    let req: GenerateRequest = serde_wasm_bindgen::from_value(options.clone())
        .map_err(|e| js_err(format!("bad options: {e}")))?;
    req.resolve(&pipe.request_facts()).map_err(js_err)
}

/// Lets the event loop run (messages, abort events) between scales. In Chromium 156's worker
/// a `setTimeout(0)` here costs next to nothing and shows no 4 ms nesting clamp, while a
/// `MessageChannel` message took about 1 ms more per scale (`bench/browser-ab.mjs`, digits).
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

async fn run_generate(
    inner: &Inner,
    options: JsValue,
    on_scale: Option<Function>,
    signal: Option<web_sys::AbortSignal>,
    previews: bool,
) -> Result<JsValue, JsValue> {
    let pipe = &inner.pipe;
    let args = parse_request(&options, pipe)?;
    let aborted = || signal.as_ref().is_some_and(|s| s.aborted());
    if aborted() {
        return Err(abort_err());
    }
    let t0 = js_sys::Date::now();
    let conds = [args.condition.clone()];
    let mut sampling = match &args.edit {
        None => pipe.start_with(&conds, &args.options).map_err(js_err)?,
        Some(e) => {
            let im = &e.image;
            let source = RgbaView::new(im.width, im.height, &im.data).map_err(js_err)?;
            let region = match &e.region {
                EditRegion::Mask(m) => Region::Mask(
                    pipe.mask_from_rgba(
                        &RgbaView::new(m.width, m.height, &m.data).map_err(js_err)?,
                    )
                    .map_err(js_err)?,
                ),
                EditRegion::KeepScales(k) => Region::KeepScales(*k),
                EditRegion::Half(h) => Region::Mask(h.mask(pipe.var_config().patch_nums.latent())),
            };
            let plan = pipe.plan_edit(&source, &region, 1).await.map_err(js_err)?;
            pipe.start_edit(&conds, &args.options, plan)
                .map_err(js_err)?
        }
    };
    let num_scales = sampling.num_scales();
    let scale_ms = Array::new();
    let mut last = t0;
    while let Some(si) = sampling.step(&mut NoHooks).await.map_err(js_err)? {
        if let Some(cb) = &on_scale {
            let ev = if previews {
                let preview = pipe
                    .decode_fhat(sampling.f_hat().clone())
                    .await
                    .map_err(js_err)?;
                image_object(&preview[0])
            } else {
                Object::new()
            };
            let _ = Reflect::set(&ev, &"scale".into(), &si.into());
            let _ = Reflect::set(&ev, &"numScales".into(), &num_scales.into());
            let _ = Reflect::set(
                &ev,
                &"patch".into(),
                &pipe.var_config().patch_nums.0[si].into(),
            );
            cb.call1(&JsValue::NULL, &ev)?;
        }
        let now = js_sys::Date::now();
        scale_ms.push(&(now - last).into());
        last = now;
        yield_now().await;
        if aborted() {
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
    // The module's linear memory now: it only grows, so this is the peak so far.
    let wasm_bytes = wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length();
    let memory = Object::new();
    let _ = Reflect::set(&memory, &"wasmBytes".into(), &wasm_bytes.into());
    let _ = Reflect::set(&out, &"memory".into(), &memory.into());
    let _ = Reflect::set(&out, &"backend".into(), &inner.backend.into());
    Ok(out.into())
}
