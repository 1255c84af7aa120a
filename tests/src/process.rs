//! The project's binaries as child processes: started with an environment,
//! logs to a file, killed with SIGKILL or stopped with SIGTERM.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Directory holding the workspace's binaries (next to the test executable).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FASTPREP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub struct Proc {
    pub bin: String,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str], env: HashMap<String, String>, log: PathBuf) -> Self {
        let mut p = Self {
            bin: bin.to_owned(),
            child: None,
            log,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let path = bin_dir().join(&self.bin);
        assert!(
            path.exists(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
            path.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log file");
        let err = log.try_clone().expect("clone log handle");
        let child = Command::new(&path)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL. Returns whether it
    /// exited on its own.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Whether it has exited (and its exit status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Starts it again with the same arguments and environment, optionally changed.
    /// Restarts it as binary `bin` (same arguments), with `changes`.
    pub fn restart_as(&mut self, bin: &str, changes: &[(&str, Option<String>)]) {
        bin.clone_into(&mut self.bin);
        self.restart_with(changes);
    }

    pub fn restart_with(&mut self, changes: &[(&str, Option<String>)]) {
        self.kill();
        for (k, v) in changes {
            match v {
                Some(v) => {
                    self.env.insert((*k).to_owned(), v.clone());
                }
                None => {
                    self.env.remove(*k);
                }
            }
        }
        self.start();
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Resident memory now and its private part, KiB, from one read of
    /// /proc: `(VmRSS, RssAnon)`. RssAnon (heap, stacks, buffers) is what a
    /// leak makes grow; the rest of RSS is mapped files, the executable's
    /// code among them, which the kernel can drop and read again.
    pub fn rss_and_anon_kib(&self) -> Option<(u64, u64)> {
        let status = self.status()?;
        Some((
            field_kib(&status, "VmRSS:")?,
            field_kib(&status, "RssAnon:")?,
        ))
    }

    fn status(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        field_kib(&self.status()?, field)
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(self.pid()?)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- {} ---\n{}", self.bin, lines[start..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time a process has used so far (user + system), from /proc.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Processes whose command line starts with `prefix` (e.g. RabbitMQ's
/// `beam.smp`), by pid.
pub fn pids_named(prefix: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let first = c.split(|b| *b == 0).next().unwrap_or_default();
                let name = first.rsplit(|b| *b == b'/').next().unwrap_or_default();
                name.starts_with(prefix.as_bytes())
            })
        })
        .collect()
}

/// A `kB` field of /proc/PID/status.
fn field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
