//! Networks and losses for SphereFace, in burn. Every burn-specific line of the project lives
//! in this crate, so stages never touch the tensor backend.

pub mod margin;
pub mod sphere;
pub mod train;

pub use burn;
