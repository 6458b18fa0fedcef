//! Real hosts for whole-cluster tests, made of network namespaces: each host has
//! its own namespace with `eth0` on one /24, all plugged into a bridge that lives
//! in a switch namespace of its own, so nothing is added to the machine's own
//! network. Everything is removed on drop, processes first.
#![allow(dead_code, clippy::disallowed_methods)]

use std::process::{Command, Output, Stdio};

pub struct Hosts {
    prefix: String,
    /// The first three octets, e.g. `10.213.42`.
    subnet: String,
    names: Vec<String>,
}

impl Hosts {
    /// Creates one namespace per name, host `i` at `<subnet>.(i+1)`. `Err` says
    /// why namespaces cannot be made here (the test then skips).
    pub fn create(names: &[&str]) -> Result<Hosts, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("network namespaces need root".into());
        }
        let id = std::process::id() % 10_000;
        let prefix = format!("ns{id}");
        let hosts = Hosts {
            subnet: format!("10.213.{}", 20 + id % 200),
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            prefix,
        };
        // Probe: a kernel without network namespaces fails here.
        let switch = hosts.namespace("sw");
        let probe = run(&["ip", "netns", "add", &switch]);
        if !probe.status.success() {
            return Err(format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (index, name) in names.iter().enumerate() {
            let namespace = hosts.namespace(name);
            ip(&["netns", "add", &namespace]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            let (outside, inside) = (
                format!("{}s{index}", hosts.prefix),
                format!("{}h{index}", hosts.prefix),
            );
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &outside, "netns", &switch]);
            ip(&["link", "set", &inside, "netns", &namespace]);
            ip(&["-n", &switch, "link", "set", &outside, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &outside, "up"]);
            ip(&["-n", &namespace, "link", "set", &inside, "name", "eth0"]);
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{}/24", hosts.address(name)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
        }
        Ok(hosts)
    }

    pub fn namespace(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn address(&self, name: &str) -> String {
        let index = self
            .names
            .iter()
            .position(|known| known == name)
            .unwrap_or_else(|| panic!("no host {name}"));
        format!("{}.{}", self.subnet, index + 1)
    }

    /// Runs `args` on host `name` (`ip netns exec`).
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec"];
        let namespace = self.namespace(name);
        all.push(&namespace);
        all.extend_from_slice(args);
        run(&all)
    }

    /// Like [`Hosts::exec`], with extra environment.
    pub fn exec_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let namespace = self.namespace(name);
        Command::new("ip")
            .args(["netns", "exec", &namespace])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Moves the calling thread into host `name`'s network: every socket it opens
    /// and every process it spawns from now on is on that host.
    pub fn enter(&self, name: &str) {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.namespace(name)))
            .expect("open the namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// Runs `work` to completion on a thread of its own that lives in host `name`'s
    /// network (its sockets and what it spawns are on that host), on a
    /// current-thread runtime. A panic in it is the caller's.
    pub fn run_on<F>(&self, name: &str, work: impl FnOnce() -> F + Send)
    where
        F: std::future::Future<Output = ()>,
    {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter(name);
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(work());
                })
                .join()
                .map_err(std::panic::resume_unwind)
                .ok();
        });
    }

    /// Cuts (or restores) host `name`'s only link.
    pub fn link(&self, name: &str, up: bool) {
        ip(&[
            "-n",
            &self.namespace(name),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }

    /// The pids of every process on host `name`.
    pub fn pids(&self, name: &str) -> Vec<String> {
        let output = run(&["ip", "netns", "pids", &self.namespace(name)]);
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut all: Vec<String> = self.names.clone();
        all.push("sw".into());
        // Supervisors may start a process between listing and killing: repeat
        // until every host is empty.
        for _ in 0..20 {
            let pids: Vec<String> = all.iter().flat_map(|name| self.pids(name)).collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = run(&["kill", "-KILL", &pid]);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for name in &all {
            let _ = run(&["ip", "netns", "del", &self.namespace(name)]);
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

fn ip(args: &[&str]) {
    let output = run(&[&["ip"], args].concat());
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
