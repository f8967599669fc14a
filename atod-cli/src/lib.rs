//! atod's library: everything `atod` does, usable without its command line, run directories or progress bars.
//!
//! Layers, from the bottom: [`render`] (the one prompt renderer), [`rollout`] (the batched episode loop),
//! [`policies`] (expert and random), [`evaluation`] and [`demos`] (episodes summarised or written as SFT data),
//! [`pipeline`] (configs, self-resolving stages, SFT, the online [`pipeline::trainer::Trainer`] and the run
//! directory that drives it), [`grid`] and [`report`] (grids of runs and their tables), [`registry`] (the
//! environments found, [`remote`] ones `FAMILY@URL` among them), `serve` (environments over HTTP, behind the
//! default feature `serve`), [`distributed`] (data-parallel training over burn's collective operations, whose
//! burn side is behind the default feature `distributed`), [`progress`] and [`plot`]. The command line is the
//! `commands` module, the leaves: each command parses its flags, calls the library and prints; no other module
//! imports from it.

pub mod commands;
pub mod demos;
pub mod distributed;
pub mod evaluation;
pub mod grid;
pub mod pipeline;
pub mod plot;
pub mod policies;
pub mod progress;
pub mod registry;
pub mod remote;
pub mod render;
pub mod report;
pub mod rollout;
#[cfg(feature = "serve")]
pub mod serve;
