//! Networks and losses for SphereFace, in burn. Every burn-specific line of the project lives
//! in this crate, so stages never touch the tensor backend.

#![warn(missing_docs)]

/// SphereFace's 3×3 convolution as an operation of our own on the CPU backend.
pub mod conv;
/// FC1 and the classifier head's products as an operation of our own on the CPU backend.
pub mod dense;
/// Which devices of this node a stage runs on (the `devices` param).
pub mod devices;
/// The losses: A-Softmax with its λ schedule, CosFace, ArcFace, plain softmax.
pub mod margin;
/// Dense helpers shared by the two convolution paths.
pub(crate) mod matrix;
/// MTCNN's P-, R- and O-Net on facenet-pytorch's published weights (the `detect` stage).
pub mod mtcnn;
/// Parameter names in weights files: the public sphere20a / Caffe names.
pub mod names;
/// PReLU with per-channel slopes as an operation of our own on the CPU backend.
pub mod prelu;
/// The matrix products under the convolutions: the same bytes on every CPU path.
pub mod products;
/// SGD with momentum and weight decay as one pass per parameter on the CPU backend.
pub mod sgd;
/// The SphereFace networks (4 to 64 layers) and the classifier head.
pub mod sphere;
/// Training: a step of SGD with the margin loss, checkpoints, weights files.
pub mod train;
/// Winograd's F(2×2, 3×3): the CPU kernel of the stride-1 weight gradients of small images.
pub mod winograd;
/// Winograd's F(4×4, 3×3): the CPU kernel of the stride-1 convolutions.
pub mod winograd4;

pub use burn;

/// The vector level burn-flex's kernels run at on this CPU (`v4` for AVX-512, `v3` for AVX2,
/// as the `macerator` crate names them). Its reductions keep one partial sum per vector lane,
/// so a loss or a bias gradient is summed in another order at another width: the bits of a
/// CPU training depend on this, and `train` and `extract` put it in their version (and so in
/// the fingerprint). The convolutions and dense products do not (`products`).
pub fn cpu_vector_level() -> String {
    format!("{:?}", macerator::Arch::detect()).to_lowercase()
}

/// A stage's `version()` for code whose bits follow [`cpu_vector_level`]: `base` with the level
/// appended (`cpu_version!("10")` is `"10+cpu-v4"` on an AVX-512 machine), made once per process.
#[macro_export]
macro_rules! cpu_version {
    ($base:literal) => {{
        static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        VERSION
            .get_or_init(|| format!("{}+cpu-{}", $base, $crate::cpu_vector_level()))
            .as_str()
    }};
}
pub use burn::tensor::Device;

/// The first CUDA GPU (builds with the `cuda` feature).
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Device {
    Device::cuda(0)
}
/// Without the `cuda` feature: the CPU (`device_named` refuses `cuda` first).
#[cfg(not(feature = "cuda"))]
pub fn cuda_device() -> Device {
    Device::flex()
}

/// The default wgpu adapter (builds with the `wgpu` feature).
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Device {
    Device::wgpu(Default::default())
}
/// Without the `wgpu` feature: the CPU (`device_named` refuses `wgpu` first).
#[cfg(not(feature = "wgpu"))]
pub fn wgpu_device() -> Device {
    Device::flex()
}

/// The values a `device` param takes (see [`device_named`]).
pub const DEVICE_NAMES: [&str; 4] = ["cpu", "cuda", "wgpu", "auto"];

/// The compute device a `device` param names: `cpu` (flex), `auto` (burn's default), or a GPU
/// backend this build was compiled with (`--features cuda` / `--features wgpu`).
pub fn device_named(name: &str) -> anyhow::Result<Device> {
    match name {
        "cpu" => Ok(Device::flex()),
        "auto" => Ok(Device::default()),
        "cuda" if cfg!(feature = "cuda") => Ok(cuda_device()),
        "wgpu" if cfg!(feature = "wgpu") => Ok(wgpu_device()),
        other => anyhow::bail!(
            "this spherepipe was built without the `{other}` backend; rebuild with `cargo build --release --features {other}` (see README: Devices) or use device: cpu"
        ),
    }
}
