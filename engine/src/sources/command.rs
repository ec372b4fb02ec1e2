//! Byte-stream sources for backups: files, stdin, and producer commands.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::StreamSource;
use crate::{Error, Result};

/// Runs a producer (`cairn backup -- pg_basebackup …`) and reads its stdout.
/// The child is killed if the backup fails before it exits.
pub struct CommandSource {
    child: Arc<Mutex<Child>>,
    stdout: ChildStdout,
    argv: Vec<String>,
    waited: bool,
}

impl CommandSource {
    /// Starts `argv[0]` with the rest as arguments; stdin is closed, stderr
    /// passes through so the producer's own messages reach the operator,
    /// and `AWS_*` and `CAIRN_*` are removed from its environment.
    pub fn spawn(argv: &[String]) -> Result<CommandSource> {
        let (prog, args) = argv.split_first().ok_or_else(|| Error::InvalidInput("empty producer command".into()))?;
        let mut cmd = Command::new(prog);
        // The producer needs none of cairn's own secrets: object-store
        // credentials and the repository key and password locations stay
        // with cairn.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("AWS_") || k.starts_with("CAIRN_")) {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io(prog, e))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(CommandSource { child: Arc::new(Mutex::new(child)), stdout, argv: argv.to_vec(), waited: false })
    }

    /// A handle that kills the producer from elsewhere (a watch that
    /// knows the backup cannot succeed); its stdout then ends and the
    /// backup fails as for any producer that died.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.child.clone())
    }
}

/// Kills a [`CommandSource`]'s producer; see [`CommandSource::stopper`].
#[derive(Clone)]
pub struct Stopper(Arc<Mutex<Child>>);

impl Stopper {
    /// Kills the producer (SIGKILL), unless it has been reaped already.
    /// Never blocks: when the backup is reaping it right now, it is over anyway.
    pub fn stop(&self) {
        if let Ok(mut c) = self.0.try_lock() {
            let _ = c.kill();
        }
    }
}

impl Read for CommandSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl StreamSource for CommandSource {
    fn finish(&mut self) -> Result<()> {
        let status = self
            .child
            .lock()
            .map_err(|_| Error::Internal("producer handle poisoned".into()))?
            .wait()
            .map_err(|e| Error::io(&self.argv[0], e))?;
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
            if let Ok(mut c) = self.child.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
