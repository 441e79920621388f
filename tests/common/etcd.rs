//! A real etcd (Debian's etcd-server) for the cluster tests: one member on
//! loopback ports of its own ([`Etcd::start`]), or members each listening on
//! an address of a network namespace ([`Etcd::start_members`], the
//! namespaces made by the test). Every member is killed when the [`Etcd`] is
//! dropped, also when the test fails.

use super::*;
use nix::sys::signal::Signal;

/// Where one member listens for clients and peers.
pub struct Member {
    /// The network namespace it runs in (the test's own when None).
    pub ns: Option<PathBuf>,
    /// Its client URL, `http://ip:port`.
    pub client: String,
    peer: String,
    /// Its process; None once [`Etcd::kill`]ed.
    child: Option<Child>,
}

/// An etcd cluster of one or more members; killed on drop.
pub struct Etcd {
    /// The first member's client URL.
    pub client: String,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// One member on loopback ports of its own, in the test's namespace.
    pub fn start() -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        Self::launch(vec![Member {
            ns: None,
            client: format!("http://127.0.0.1:{client_port}"),
            peer: format!("http://127.0.0.1:{peer_port}"),
            child: None,
        }])
    }

    /// One member per `(namespace, address)`, on etcd's own ports (2379 for
    /// clients, 2380 for peers) of that address, forming one cluster.
    pub fn start_members(at: &[(&Path, &str)]) -> Etcd {
        Self::launch(
            at.iter()
                .map(|(ns, ip)| Member {
                    ns: Some(ns.to_path_buf()),
                    client: format!("http://{ip}:2379"),
                    peer: format!("http://{ip}:2380"),
                    child: None,
                })
                .collect(),
        )
    }

    fn launch(members: Vec<Member>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let initial = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("e{i}={}", m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            client: members[0].client.clone(),
            members,
            dir,
        };
        for i in 0..etcd.members.len() {
            let m = &etcd.members[i];
            let mut command = Command::new("etcd");
            command
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(etcd.dir.path().join(format!("data{i}")))
                .args(["--listen-client-urls", &m.client])
                .args(["--advertise-client-urls", &m.client])
                .args(["--listen-peer-urls", &m.peer])
                .args(["--initial-advertise-peer-urls", &m.peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                // A LAN's timing (docs/cluster.md, "etcd"): a leader lost is
                // replaced in well under a second, inside the relays' lease.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(etcd.log_path(i)).unwrap());
            let _ns = in_netns_when_spawned(&mut command, m.ns.as_deref()).unwrap();
            let child = command
                .spawn()
                .expect("etcd (Debian's etcd-server) must be installed: scripts/test installs it");
            etcd.members[i].child = Some(child);
        }
        assert!(
            wait_until(Duration::from_secs(20), || etcd
                .ctl(&["endpoint", "health"])
                .is_some()),
            "etcd did not become healthy:\n{}",
            etcd.logs()
        );
        etcd
    }

    fn log_path(&self, member: usize) -> PathBuf {
        self.dir.path().join(format!("etcd{member}.log"))
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- etcd member {i}:\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client URLs of the members, as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("\"{}\"", m.client))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The members still running.
    fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.child.is_some())
    }

    /// Runs etcdctl against the running members, from the first one's
    /// namespace; its stdout when it succeeded.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let first = self.alive().next()?;
        let endpoints: Vec<&str> = self.alive().map(|m| m.client.as_str()).collect();
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "--command-timeout=2s"])
            .args(args);
        let _ns = in_netns_when_spawned(&mut command, first.ns.as_deref()).ok()?;
        let out = command.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of the member that is the raft leader, as the members say.
    pub fn leader(&self) -> Option<usize> {
        let text = self.ctl(&["endpoint", "status", "--write-out", "json"])?;
        let statuses: Value = serde_json::from_str(&text).ok()?;
        statuses.as_array()?.iter().find_map(|s| {
            let status = &s["Status"];
            (status["leader"].as_u64()? == status["header"]["member_id"].as_u64()?)
                .then(|| s["Endpoint"].as_str())
                .flatten()
                .and_then(|e| self.members.iter().position(|m| m.client == e))
        })
    }

    /// Sends `sig` to every running member.
    pub fn signal(&self, sig: Signal) {
        for m in self.alive() {
            let pid = m.child.as_ref().unwrap().id() as i32;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        }
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
