//! Writes mcsctl's man page, `mcsctl.1`, into the directory named by its
//! one argument: `make man` runs it to put the page into the build tree.
//!
//! The page is rendered from mcsctl's own command definitions, so it
//! cannot drift from `mcsctl --help`; being an example, this generator is
//! never installed, and the shipped `mcsctl` does not link clap_mangen.

use std::process::ExitCode;

// Only `Cli` is used here: the rest of the binary is dead code.
#[allow(dead_code)]
#[path = "../src/bin/mcsctl/main.rs"]
mod mcsctl;
// mcsctl's modules name these from the crate root, which here is this file.
use mcsctl::{engine, output, Failure};

#[path = "../../deploy/man/write.rs"]
mod write;

fn main() -> ExitCode {
    let command = <mcsctl::cli::Cli as clap::CommandFactory>::command();
    write::main("mcsctl-man", clap_mangen::Man::new(command))
}
