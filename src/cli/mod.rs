//! The command line's library side. So far: the exit codes of the README, named.
//! (Issue 12 item 2 is unfinished: the subcommands still live in `src/main.rs`.)

/// How `gobearmon` ends (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// `probe` found the target offline, or `status`/`contact test` failed.
    Failed = 1,
    /// An unusable `probe` command line.
    Usage = 2,
    /// `probe` could not run the check here.
    CannotRun = 3,
    /// An unusable config file, or an address that cannot be bound (EX_USAGE).
    Config = 64,
    /// An internal error (EX_SOFTWARE).
    Software = 70,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}
