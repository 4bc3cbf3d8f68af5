//! Writes mcsd's man page, `mcsd.8`, into the directory named by its one
//! argument: `make man` runs it to put the page into the build tree.
//!
//! The page is rendered from the daemon's own flag definitions, so it
//! cannot drift from `mcsd --help`; being an example, this generator is
//! never installed, and the shipped `mcsd` does not link clap_mangen.

use std::process::ExitCode;

// Only `Args` is used here: the rest of the binary is dead code.
#[allow(dead_code)]
#[path = "../src/main.rs"]
mod daemon;

#[path = "../../deploy/man/write.rs"]
mod write;

fn main() -> ExitCode {
    let command = <daemon::Args as clap::CommandFactory>::command();
    write::main("mcsd-man", clap_mangen::Man::new(command).section("8"))
}
