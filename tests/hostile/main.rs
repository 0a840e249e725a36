//! Hostile clients against the real binary: request smuggling and strict framing, slow clients,
//! head size limits, path normalisation bypasses, health verdicts across reloads and the memory
//! an idle connection costs (the hardening contract of issue 10).
#![allow(clippy::unwrap_used)] // tests unwrap freely

use testkit::Bin;

/// The binary under test.
const BIN: Bin = testkit::bin!();

mod h2;
mod head_limits;
mod health;
mod memory;
mod paths;
mod raw_backend;
mod slow;
mod smuggling;
mod wire;
