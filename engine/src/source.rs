//! Byte-stream sources for backups: files, stdin, and producer commands.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::{Error, Result};

/// A stream read once by the backup pipeline.
///
/// `finish` is called after the last byte was read and before anything is
/// committed: a source that can tell its output was incomplete (a producer
/// that exited non-zero) fails there, and no snapshot is written.
pub trait StreamSource: Read + Send {
    /// Confirms that the stream ended normally.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Facts learnt from the bytes (RDB version, key counts, …), recorded in
    /// the snapshot's metadata; asked for after a successful `finish`.
    fn metadata(&self) -> Option<serde_json::Value> {
        None
    }
}

impl StreamSource for Box<dyn StreamSource> {
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }

    fn metadata(&self) -> Option<serde_json::Value> {
        (**self).metadata()
    }
}

impl StreamSource for std::fs::File {}
impl StreamSource for std::io::Stdin {}
impl StreamSource for std::io::Cursor<Vec<u8>> {}
impl StreamSource for std::io::Empty {}
impl<R: Read + Send> StreamSource for std::io::Take<R> {}

/// Runs a producer (`cairn backup -- pg_basebackup …`) and reads its stdout.
/// The child is killed if the backup fails before it exits.
pub struct CommandSource {
    child: Child,
    stdout: ChildStdout,
    argv: Vec<String>,
    waited: bool,
}

impl CommandSource {
    /// Starts `argv[0]` with the rest as arguments; stdin is closed, stderr
    /// passes through so the producer's own messages reach the operator.
    pub fn spawn(argv: &[String]) -> Result<CommandSource> {
        let (prog, args) = argv.split_first().ok_or_else(|| Error::Config("empty producer command".into()))?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io(prog, e))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(CommandSource { child, stdout, argv: argv.to_vec(), waited: false })
    }
}

impl Read for CommandSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl StreamSource for CommandSource {
    fn finish(&mut self) -> Result<()> {
        let status = self.child.wait().map_err(|e| Error::io(&self.argv[0], e))?;
        self.waited = true;
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!("was killed by signal {}", status.signal().unwrap_or(0))
            }
        };
        Err(Error::ProducerFailed { command: self.argv.join(" "), status: how })
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
