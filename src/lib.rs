//! # nextscale
//!
//! Next-scale-prediction image generation (VAR) in Rust on burn: the multi-scale VQ-VAE, the
//! VAR transformer and its sampler, loading official checkpoints, on CPU and GPU, natively
//! and in WebAssembly.
//!
//! Data flow: a checkpoint → [`checkpoint::Checkpoint`] → [`vqvae::VqVae`] and [`var::Var`]
//! → [`sampler::generate`] (tokens, scale by scale) → [`vqvae::VqVae::fhat_to_img`] → pixels.

pub mod checkpoint;
pub mod condition;
pub mod config;
pub mod device;
pub mod edit;
pub mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod image;
pub mod kernels;
pub mod nn;
pub mod pack;
pub mod params;
pub mod pipeline;
pub mod quant;
pub mod readback;
pub mod request;
pub mod resample;
pub mod rng;
pub mod sampler;
pub mod state_dict;
pub mod text;
pub mod var;
pub mod vqvae;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use burn;
pub use checkpoint::Checkpoint;
pub use condition::Condition;
pub use config::{PatchNums, VarConfig, VqVaeConfig};
pub use error::{Error, Result};
pub use pipeline::Pipeline;
pub use sampler::{SampleOptions, generate};
pub use var::Var;
pub use vqvae::VqVae;
