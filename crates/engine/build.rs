//! Records the commit this binary is built from (when built from a git checkout) for the
//! artifacts' lineage: `SPHEREPIPE_REVISION`, with `+changes` when tracked files differed
//! from it when this script last ran (on a commit, a checkout or a `git add`: an edit alone
//! does not rerun it, so a dirty build may be shown clean).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    // A commit or a checkout moves HEAD's log; the source files themselves rebuild the crate.
    println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/index");
    let Some(rev) = git(&["rev-parse", "HEAD"]) else { return };
    let changed = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!("cargo:rustc-env=SPHEREPIPE_REVISION={rev}{}", if changed { "+changes" } else { "" });
}
