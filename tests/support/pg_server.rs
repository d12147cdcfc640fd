//! A real PostgreSQL 15 cluster for the adapter tests: `initdb` and
//! `pg_ctl` from `PG_BIN` (default `/usr/lib/postgresql/15/bin`), run as
//! the `postgres` user when we are root (the server refuses root), unix
//! socket only (`listen_addresses=''`), in a directory of its own;
//! `pg_ctl -w` waits for readiness. One cluster per test binary, a database
//! per test. Without the binaries the tests skip loudly, and fail under
//! `CI=true`.
#![allow(dead_code)] // each test binary uses a part

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running cluster; stopped (immediately) and its directory removed on
/// drop.
pub(crate) struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// The `postgres` user's ids, when we are root.
    ids: Option<(u32, u32)>,
    running: bool,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Our effective user id, from `/proc/self/status`.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("Uid line")
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&"postgres") || f.len() <= 3 {
                return None;
            }
            Some((f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?))
        })
        .expect("a postgres user (root may not run the server)")
}

impl PgCluster {
    /// Starts a cluster, or `None` (with a loud message) when the binaries
    /// are missing and this is not CI.
    pub(crate) fn start() -> Option<Self> {
        let bin = PathBuf::from(
            std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        if !bin.join("initdb").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL binaries not found in {}, and CI is set",
                bin.display()
            );
            eprintln!(
                "SKIPPED: no PostgreSQL binaries in {} (set PG_BIN); these tests did not run",
                bin.display()
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "tb-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let ids = (euid() == 0).then(postgres_ids);
        let mut cluster = Self {
            dir,
            bin,
            ids,
            running: false,
        };
        cluster.chown(&cluster.dir.clone());
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.start_again();
        Some(cluster)
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
        }
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of the cluster's programs as the `postgres` user.
    fn run(&self, program: &str, args: &[&str]) {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect(program);
        assert!(
            out.status.success(),
            "{program} failed: {}\nlog: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("pg.log")).unwrap_or_default()
        );
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub(crate) fn start_again(&mut self) {
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.dir.display()
        );
        let log = self.dir.join("pg.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
        self.running = true;
    }

    /// `pg_ctl stop -m immediate`: a crash, as far as clients can tell
    /// (no shutdown checkpoint; recovery on the next start).
    pub(crate) fn crash(&mut self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.running = false;
    }

    /// The connection string of database `db`.
    pub(crate) fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} user=postgres dbname={db} connect_timeout=5",
            self.dir.display()
        )
    }

    /// A client of database `db`.
    pub(crate) fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(db), postgres::NoTls)
            .expect("connect to the test cluster")
    }

    /// A fresh database; returns its connection string.
    pub(crate) fn database(&self) -> String {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .expect("create database");
        self.conninfo(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = Command::new(self.bin.join("pg_ctl"));
            cmd.args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((uid, gid)) = self.ids {
                cmd.uid(uid).gid(gid);
            }
            let _ = cmd.status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
