//! The one error type of the dataplane layer.

/// What went wrong while reading or programming the kernel.
///
/// Command failures carry the program, its arguments and its stderr, so an operator can rerun
/// the exact command; restore failures also carry the input line the tool complained about.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        args: Vec<String>,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "`{program} {}` failed ({status}): {}{}",
        args.join(" "),
        stderr.trim(),
        failing_input_line.as_ref().map(|line| format!(" [input: {line}]")).unwrap_or_default()
    )]
    CommandFailed {
        program: String,
        args: Vec<String>,
        /// The exit status as the OS reported it (`exit status: 1`, `signal: 9`).
        status: String,
        stderr: String,
        /// For restore tools that report `line N`: that line of the input.
        failing_input_line: Option<String>,
    },

    /// The desired state would produce restore input the tools reject or misread, or would
    /// touch objects Palisade does not own. Caught before any command runs.
    #[error("invalid desired state ({family}): {reason}")]
    InvalidDesiredState { family: String, reason: String },
}
