//! r2sync publishes the Markdown of a Git commit to Cloudflare R2 or any
//! S3-compatible bucket, the way Terraform manages infrastructure.
//!
//! The pipeline, one module per stage:
//! [`source`] reads a commit through git2, [`markdown`] normalizes each
//! document, [`manifest`] builds the desired state, [`remote`] reads the
//! actual state from the bucket, [`plan`] compares the two without I/O, and
//! [`apply`] executes the plan. [`rules`] contains the per-path rules of the
//! configuration file; [`config`] and [`cli`] sit at the edge.

pub mod apply;
pub mod cli;
pub mod config;
pub mod limits;
pub mod manifest;
pub mod markdown;
pub mod plan;
pub mod remote;
pub mod rules;
pub mod source;
