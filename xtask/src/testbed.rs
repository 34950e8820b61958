//! `cargo xtask testbed ...`: builds seer-testbed and runs its orchestrator with the given
//! arguments (`seer-testbed --help`; `seer-testbed/README.md` documents scenarios and outputs).
//! The working directory stays the caller's, so relative paths mean what they say.
use anyhow::Result;

use crate::util;

pub fn run(args: &[String]) -> Result<()> {
    util::step("build seer-testbed");
    util::cargo(&["build", "-p", "seer-testbed"])?;
    util::step(&format!("seer-testbed {}", args.join(" ")));
    util::exec(util::root().join("target/debug/seer-testbed"), args)
}
