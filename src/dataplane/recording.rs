//! A [`CommandRunner`] that runs nothing: it answers from a script and records every call, so
//! tests can pin the exact restore texts the dataplane would send, without root.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::error::DataplaneError;
use super::exec::{CommandOutput, CommandRunner};

/// One call as the dataplane made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

impl RecordedCall {
    /// Restores are the calls that write; reads never get stdin.
    pub fn is_restore(&self) -> bool {
        self.stdin.is_some()
    }
}

#[derive(Debug, Clone)]
enum Scripted {
    Output(String),
    Failure(String),
}

/// Answers by program name: a scripted stdout, a scripted failure, or empty success.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    script: Mutex<HashMap<String, Scripted>>,
    calls: Mutex<Vec<RecordedCall>>,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `program` succeeds and prints `stdout`, whatever its arguments.
    pub fn set_output(&self, program: &str, stdout: &str) {
        lock(&self.script).insert(program.to_string(), Scripted::Output(stdout.to_string()));
    }

    /// From now on `program` exits with 1 and prints `stderr`.
    pub fn set_failure(&self, program: &str, stderr: &str) {
        lock(&self.script).insert(program.to_string(), Scripted::Failure(stderr.to_string()));
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.calls).clone()
    }

    pub fn restore_calls(&self) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(RecordedCall::is_restore)
            .collect()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }
}

impl CommandRunner for RecordingRunner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError> {
        lock(&self.calls).push(RecordedCall {
            program: program.to_string(),
            args: args.to_vec(),
            stdin: stdin.map(str::to_string),
        });
        match lock(&self.script).get(program) {
            None => Ok(CommandOutput::default()),
            Some(Scripted::Output(stdout)) => Ok(CommandOutput {
                stdout: stdout.clone(),
                stderr: String::new(),
            }),
            Some(Scripted::Failure(stderr)) => Err(DataplaneError::CommandFailed {
                program: program.to_string(),
                args: args.to_vec(),
                status: "exit status: 1".to_string(),
                stderr: stderr.clone(),
                failing_input_line: None,
            }),
        }
    }
}

/// A panic in another test thread must not hide this runner's record.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
