//! What both man page generators (`server/examples/mcsd-man.rs`,
//! `client/examples/mcsctl-man.rs`) do once they have their command:
//! render it and put the page into the directory named by their one
//! argument. Each includes this file with `#[path]`; it is never built on
//! its own and never installed.

use std::path::Path;
use std::process::ExitCode;

/// Renders `man` and puts it in `dir` under its conventional name. The
/// page appears whole (written aside, then renamed): parallel `make
/// install-files` runs may copy it while another one regenerates it.
fn write_page(man: &clap_mangen::Man, dir: &Path) -> std::io::Result<()> {
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::create_dir_all(dir)?;
    let name = man.get_filename();
    let aside = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&aside, page)?;
    std::fs::rename(&aside, dir.join(name))
}

/// The generator's `main`: `tool DIR` writes `man` into DIR; exit 2 on bad
/// usage, 1 (with one line naming the page and the directory) on failure.
pub(crate) fn main(tool: &str, man: clap_mangen::Man) -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: {tool} DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    match write_page(&man, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let page = man.get_filename();
            eprintln!("{tool}: writing {page} into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
