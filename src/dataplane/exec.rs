//! The single door to subprocesses. Everything the dataplane does to the kernel goes through
//! [`CommandRunner`], so restore texts can be checked without root (with
//! [`RecordingRunner`](super::recording::RecordingRunner)) and kernel tests can run inside a
//! network namespace (with [`NetnsRunner`]).

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::error::DataplaneError;

/// What a successful command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs one program to completion. A non-zero exit is an error
/// ([`DataplaneError::CommandFailed`]), so callers only see output of commands that worked.
pub trait CommandRunner: Send + Sync {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError>;
}

/// Runs programs on this host with `std::process`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError> {
        run_process(program, args, stdin)
    }
}

/// Runs every program inside a named network namespace (`ip netns exec NS ...`), so tests and
/// tools can program a throwaway namespace instead of the host.
#[derive(Debug, Clone)]
pub struct NetnsRunner {
    namespace: String,
}

impl NetnsRunner {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl CommandRunner for NetnsRunner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError> {
        let mut wrapped = Vec::with_capacity(args.len() + 4);
        wrapped.extend(["netns", "exec", &self.namespace, program].map(String::from));
        wrapped.extend(args.iter().cloned());
        run_process("ip", &wrapped, stdin)
    }
}

fn run_process(
    program: &str,
    args: &[String],
    stdin: Option<&str>,
) -> Result<CommandOutput, DataplaneError> {
    let spawn_error = |source| DataplaneError::Spawn {
        program: program.to_string(),
        args: args.to_vec(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;

    // Feed stdin from another thread: a large restore input must not block on a full pipe
    // while the child waits for us to read its output.
    let output = std::thread::scope(|scope| {
        let writer = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                Some(scope.spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let output = child.wait_with_output();
        // A write error (the child exited early) shows up as the child's own failure below.
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        output
    })
    .map_err(spawn_error)?;

    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(CommandOutput { stdout, stderr })
    } else {
        Err(DataplaneError::CommandFailed {
            program: program.to_string(),
            args: args.to_vec(),
            status: output.status.to_string(),
            failing_input_line: stdin.and_then(|text| failing_input_line(text, &stderr)),
            stderr,
        })
    }
}

/// `iptables-restore` and `ipset restore` name the input line they choke on ("line 3 failed",
/// "Error in line 3:"); pick that line out so the error says what was wrong.
pub(crate) fn failing_input_line(input: &str, stderr: &str) -> Option<String> {
    let lower = stderr.to_ascii_lowercase();
    let after = &lower[lower.find("line ")? + "line ".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let number: usize = digits.parse().ok()?;
    input
        .lines()
        .nth(number.checked_sub(1)?)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_line_is_picked_from_iptables_and_ipset_messages() {
        let input = "*filter\n:PAL-A - [0:0]\n-X PAL-B\nCOMMIT\n";
        assert_eq!(
            failing_input_line(input, "iptables-restore: line 3 failed\n").as_deref(),
            Some("-X PAL-B")
        );
        assert_eq!(
            failing_input_line(input, "ipset v7.17: Error in line 2: Set cannot be created")
                .as_deref(),
            Some(":PAL-A - [0:0]")
        );
        assert_eq!(failing_input_line(input, "no line number here"), None);
        assert_eq!(failing_input_line(input, "line 99 failed"), None);
    }

    #[test]
    fn system_runner_reports_exit_status_and_stderr() {
        let args = vec!["-c".to_string(), "cat; echo oops >&2; exit 3".to_string()];
        let error = SystemRunner
            .run("sh", &args, Some("line one\nline two\n"))
            .expect_err("the script exits with 3");
        match error {
            DataplaneError::CommandFailed {
                program,
                status,
                stderr,
                ..
            } => {
                assert_eq!(program, "sh");
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "oops\n");
            }
            other => panic!("unexpected error {other:?}"),
        }
        let output = SystemRunner
            .run(
                "sh",
                &["-c".to_string(), "cat".to_string()],
                Some("echo me"),
            )
            .expect("cat succeeds");
        assert_eq!(output.stdout, "echo me");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let error = SystemRunner
            .run("/nonexistent/palisade-test-binary", &[], None)
            .expect_err("no such program");
        assert!(matches!(error, DataplaneError::Spawn { .. }), "{error:?}");
    }
}
