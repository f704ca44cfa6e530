//! Debian's nginx on a free loopback port, configured with the repository's `deploy/nginx` files
//! and proxying to the instances a test or the drill started.
//!
//! `deploy/nginx/flashback.conf` is used as it is, except its one `listen` line, which becomes
//! `listen 127.0.0.1:<port>`; `flashback-upstreams.conf` is rewritten with the given addresses,
//! each with the parameters of the repository's `server` lines (`max_fails=… fail_timeout=…`),
//! so what runs is what ships. A small main configuration around them (written here) keeps the
//! pid file, logs and temporary files in a temporary directory and runs nginx in the
//! foreground as one process (`master_process off`): a worker would outlive a killed master and
//! keep the port, where one process is ended by the [`Watchdog`] like every other service.
//!
//! The access log has one line per request in the `flashback` format of `flashback.conf`,
//! including `upstream="<addr>[, <addr>…]" ustatus="<status>[, <status>…]"`: every instance a
//! request was sent to, in order, and what each answered (`502` for one that failed).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::ports::free_port;
use crate::process::{Proc, log_tail};
use crate::watchdog::Watchdog;

/// The site configuration in `deploy/nginx`, included by the main configuration.
const SITE: &str = "flashback.conf";
/// The upstream list in `deploy/nginx`, included by the site configuration.
const UPSTREAMS: &str = "flashback-upstreams.conf";
/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to stop after `SIGQUIT` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The repository's `deploy/nginx` folder (found from this crate's location at build time).
pub fn repo_deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx")
}

/// A running nginx of its own; see the module docs. Dropping it stops nginx (`SIGQUIT`, then
/// `SIGKILL` if it lingers) and removes its files.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    home: PathBuf,
    proc: Option<Proc>,
    _watchdog: Watchdog,
    // Last, so the directory goes only after the process is dead.
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port with `deploy_dir`'s config (the repo's
    /// deploy/nginx) proxying to `upstreams`; panics with nginx's error log on failure.
    pub fn start(deploy_dir: &Path, upstreams: &[SocketAddr]) -> Self {
        let binary = nginx_binary();
        let site = read(&deploy_dir.join(SITE));
        let upstream_list = render_upstreams(&read(&deploy_dir.join(UPSTREAMS)), upstreams)
            .unwrap_or_else(|e| panic!("{}: {e}", deploy_dir.join(UPSTREAMS).display()));
        let dir = tempfile::Builder::new().prefix("flashback-nginx-").tempdir().expect("temporary directory");
        let home = dir.path().join("nginx");
        std::fs::create_dir_all(home.join("temp")).expect("nginx directory");
        std::fs::write(home.join(UPSTREAMS), upstream_list).expect("write the upstream list");
        std::fs::write(home.join("nginx.conf"), main_config(&home)).expect("write nginx.conf");
        let watchdog = Watchdog::spawn(dir.path());
        let mut nginx = Self { port: 0, home, proc: None, _watchdog: watchdog, _dir: dir };
        for attempt in 1..=3 {
            nginx.port = free_port();
            let rendered =
                render_site(&site, nginx.port).unwrap_or_else(|e| panic!("{}: {e}", deploy_dir.join(SITE).display()));
            std::fs::write(nginx.home.join(SITE), rendered).expect("write the site configuration");
            match nginx.launch(&binary) {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") && attempt < 3 => {}
                Err(log) => panic!("nginx did not start on port {}:\n{log}", nginx.port),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its error log so far, for messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.home.join("error.log")).unwrap_or_default()
    }

    /// Its access log so far: one line per request, with the instances tried and their answers
    /// (see the module docs).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.home.join("access.log")).unwrap_or_default()
    }

    fn launch(&mut self, binary: &Path) -> Result<(), String> {
        let error_log = self.home.join("error.log");
        let pid_file = self.home.join("nginx.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut command = Command::new(binary);
        command.arg("-e").arg(&error_log).arg("-p").arg(&self.home).arg("-c").arg(self.home.join("nginx.conf"));
        let mut proc = Proc::spawn(command, &self.home).map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // nginx writes its pid file only once it has bound its port.
            if pid_file.exists() && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.exited() {
                return Err(format!("exited with {status}\n{}", log_tail(&error_log, 30)));
            }
            if Instant::now() >= deadline {
                proc.kill();
                return Err(format!("not listening within {START_TIMEOUT:?}\n{}", log_tail(&error_log, 30)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(Signal::QUIT);
            proc.wait_or_kill(STOP_TIMEOUT);
        }
    }
}

/// Debian's `/usr/sbin/nginx`, else `nginx` on the `PATH`; panics naming the package otherwise.
fn nginx_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nginx"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "nginx not found (/usr/sbin/nginx or on PATH): these tests run Debian's nginx; \
                 install it with `apt-get install -y nginx` (.ci/run installs it)"
            )
        })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The main configuration: everything that differs per environment (process, pid file, logs,
/// temporary files), around the repository's site configuration.
fn main_config(home: &Path) -> String {
    let h = home.display();
    let mut temp = String::new();
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(temp, "    {kind}_temp_path \"{h}/temp/{kind}\";");
    }
    format!(
        "# Written by flashback-harness for one throwaway nginx.\n\
         daemon off;\n\
         master_process off;\n\
         pid \"{h}/nginx.pid\";\n\
         error_log \"{h}/error.log\" notice;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n{temp}    include {SITE};\n    access_log \"{h}/access.log\" flashback;\n}}\n"
    )
}

/// `site` with its one `listen` directive replaced by `listen 127.0.0.1:<port>`.
fn render_site(site: &str, port: u16) -> Result<String, String> {
    let mut found = 0;
    let mut out = String::with_capacity(site.len() + 32);
    for line in site.lines() {
        if directive(line).starts_with("listen ") {
            found += 1;
            let _ = writeln!(out, "    listen 127.0.0.1:{port};");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    match found {
        1 => Ok(out),
        n => Err(format!("expected exactly one `listen` line, found {n}")),
    }
}

/// One `server <addr> <parameters>;` line per address, with the parameters the repository's
/// list gives every server (it must give them all the same ones).
fn render_upstreams(list: &str, upstreams: &[SocketAddr]) -> Result<String, String> {
    if upstreams.is_empty() {
        return Err("no upstream addresses given".into());
    }
    let mut params: Option<String> = None;
    for line in list.lines().map(directive).filter(|l| !l.is_empty()) {
        let server = line
            .strip_prefix("server ")
            .and_then(|rest| rest.strip_suffix(';'))
            .ok_or_else(|| format!("only `server <address> <parameters>;` lines are supported, found `{line}`"))?;
        let these = server.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        if let Some(p) = &params
            && *p != these
        {
            return Err(format!("servers have different parameters (`{p}` and `{these}`)"));
        }
        params = Some(these);
    }
    let params = params.ok_or("no `server` line")?;
    let mut out = String::from("# Written by flashback-harness.\n");
    for addr in upstreams {
        let _ = writeln!(out, "server {addr} {params};");
    }
    Ok(out)
}

/// A configuration line without its comment and surrounding blanks.
fn directive(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_line_becomes_a_loopback_port() {
        let site = "server {\n    # listen here\n    listen 80;\n    location / {}\n}\n";
        let out = render_site(site, 4321).expect("renders");
        assert_eq!(out, "server {\n    # listen here\n    listen 127.0.0.1:4321;\n    location / {}\n}\n");
        assert!(render_site("server {}\n", 1).is_err(), "no listen line");
        assert!(render_site("listen 80;\nlisten 81;\n", 1).is_err(), "two listen lines");
    }

    #[test]
    fn upstreams_keep_the_repository_parameters() {
        let list =
            "# comment\nserver a:8080 max_fails=3 fail_timeout=10s;\nserver b:8080 max_fails=3 fail_timeout=10s;\n";
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        let out = render_upstreams(list, &addrs).expect("renders");
        assert!(out.contains("server 127.0.0.1:1 max_fails=3 fail_timeout=10s;\n"), "{out}");
        assert!(out.contains("server 127.0.0.1:2 max_fails=3 fail_timeout=10s;\n"), "{out}");
        assert!(!out.contains("a:8080"), "{out}");
    }

    #[test]
    fn upstream_lists_the_harness_cannot_copy_are_refused() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap()];
        assert!(render_upstreams("server a max_fails=1;\nserver b max_fails=2;\n", &addrs).is_err());
        assert!(render_upstreams("keepalive 8;\n", &addrs).is_err());
        assert!(render_upstreams("# nothing\n", &addrs).is_err());
        assert!(render_upstreams("server a;\n", &[]).is_err());
    }

    #[test]
    fn the_repository_files_render() {
        let dir = repo_deploy_dir();
        render_site(&read(&dir.join(SITE)), 8080).expect("site renders");
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap()];
        let out = render_upstreams(&read(&dir.join(UPSTREAMS)), &addrs).expect("upstreams render");
        assert!(out.contains("max_fails="), "passive health kept: {out}");
    }
}
