//! Choosing a compute device at run time.

use std::fmt;
use std::str::FromStr;

#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::Device;

use crate::error::{Error, Result};

/// A backend a user can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (`flex`). Always available.
    Cpu,
    /// wgpu: Vulkan/Metal/DX12/GL natively, WebGPU in a browser.
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "vulkan" | "wgpu" | "gpu" | "webgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid(format!(
                "unknown device `{other}` (use cpu, vulkan or cuda)"
            ))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "vulkan",
            Self::Cuda => "cuda",
        })
    }
}

/// Initialises a native device, failing cleanly when the backend is absent.
#[cfg(not(target_arch = "wasm32"))]
pub fn init_device(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Device::wgpu_options()
            .init()
            .map_err(|e| Error::Device(format!("no wgpu/Vulkan adapter: {e:?}"))),
        #[cfg(not(feature = "wgpu"))]
        BackendKind::Wgpu => Err(Error::Device(
            "this build has no wgpu support (rebuild with the `wgpu` feature)".into(),
        )),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            // Without a driver, CUDA's device thread panics on first use; probe it here, quietly,
            // so the caller gets an error instead of a crash.
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let probe = std::panic::catch_unwind(|| {
                let d = Device::cuda(0);
                let _ = burn::tensor::Tensor::<1>::zeros([1], &d).into_data();
                d
            });
            std::panic::set_hook(prev);
            probe.map_err(|_| {
                Error::Device(
                    "CUDA is unavailable: the NVIDIA driver (libcuda.so.1) could not be loaded or no GPU was found"
                        .into(),
                )
            })
        }
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => Err(Error::Device(
            "this build has no CUDA support (rebuild native-trainer with `--features cuda`)".into(),
        )),
    }
}
