//! A network of its own for every sandbox: bubblewrap creates an empty network namespace, an
//! nftables ruleset is put in it (by root, from outside: the notebook cannot change it), then
//! `slirp4netns`, running as the notebook's uid in the notebook's cgroup, gives it a NAT'ed
//! `tap0` (10.0.2.100, gateway 10.0.2.2, DNS 10.0.2.3) whose connections leave from the
//! host's network as ordinary sockets of that uid. It never connects to the host's loopback
//! (`--disable-host-loopback`), and the ruleset refuses the host's own addresses, link-local
//! (cloud metadata) and multicast before any packet reaches it, plus what the operator denies.
//! Nothing in the sandbox can listen on the host: slirp4netns forwards no port.
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use ipnet::IpNet;
use tokio::process::Command;

use super::sys::{ChildSetup, HostIds, netns_owner};
use crate::RuntimeError;

/// How sandboxes reach the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// NAT through slirp4netns, filtered by [`EgressPolicy`].
    Slirp4netns,
    /// Loopback only: no outbound traffic at all.
    None,
}

/// What the operator allows and denies on top of the built-in denials.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// When not empty, only these (and the sandbox's DNS forwarder) are reachable.
    pub allow: Vec<IpNet>,
    /// Never reachable.
    pub deny: Vec<IpNet>,
}

/// slirp4netns's fixed addresses inside the namespace.
const SLIRP_HOST: &str = "10.0.2.2";
const SLIRP_DNS: &str = "10.0.2.3";

/// Always refused: the host through slirp's gateway, "this network", link-local (cloud
/// metadata services live at 169.254.169.254), multicast and broadcast.
const BUILT_IN_DENY: [&str; 7] = [
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// The addresses of this host's interfaces, which a notebook must not reach.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = addresses
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| !ip.is_loopback())
        .collect();
    found.sort();
    found.dedup();
    found
}

fn set(nets: &[IpNet], v4: bool) -> Option<String> {
    let items: Vec<String> = nets
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(IpNet::to_string)
        .collect();
    (!items.is_empty()).then(|| format!("{{ {} }}", items.join(", ")))
}

/// The nftables ruleset of a sandbox's namespace.
pub fn ruleset(policy: &EgressPolicy, host: &[IpAddr]) -> String {
    let mut deny: Vec<IpNet> = BUILT_IN_DENY
        .iter()
        .map(|n| n.parse().expect("valid built-in network"))
        .collect();
    deny.push(IpNet::from(
        SLIRP_HOST.parse::<IpAddr>().expect("valid address"),
    ));
    deny.extend(host.iter().map(|ip| IpNet::from(*ip)));
    deny.extend(policy.deny.iter().copied());
    // No connection tracking: the rules look at destinations only, and conntrack would cost
    // every namespace its tables.
    let mut rules = vec!["oif \"lo\" accept".to_owned()];
    for (family, v4) in [("ip", true), ("ip6", false)] {
        if let Some(set) = set(&deny, v4) {
            rules.push(format!(
                "{family} daddr {set} reject with icmpx type admin-prohibited"
            ));
        }
    }
    if !policy.allow.is_empty() {
        rules.push(format!("ip daddr {SLIRP_DNS} accept"));
        for (family, v4) in [("ip", true), ("ip6", false)] {
            if let Some(set) = set(&policy.allow, v4) {
                rules.push(format!("{family} daddr {set} accept"));
            }
        }
        rules.push("reject with icmpx type admin-prohibited".to_owned());
    }
    format!(
        "table inet atelier {{\n  chain egress {{\n    type filter hook output priority 0; policy accept;\n{}\n  }}\n}}\n",
        rules
            .iter()
            .map(|r| format!("    {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The `resolv.conf` a sandbox sees.
pub fn resolv_conf(egress: &Egress) -> String {
    match egress {
        Egress::Slirp4netns => format!("nameserver {SLIRP_DNS}\noptions edns0\n"),
        Egress::None => String::new(),
    }
}

/// Puts the ruleset into the namespace of `pid` (a process of the sandbox) and connects it
/// through slirp4netns, which runs as `ids` in the cgroups of `cgroup_procs` and ends when
/// `exit` (whose other end the sandbox keeps open) reaches end of file.
pub async fn attach(
    pid: i32,
    ids: HostIds,
    cgroup_procs: Vec<File>,
    rules: &str,
    exit: OwnedFd,
    log: File,
) -> Result<(), RuntimeError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        RuntimeError::Fatal(format!("network: {what}: {error}"))
    };
    // The namespace is held open from here: if the sandbox dies now, nothing else gets it.
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| failed("the sandbox's namespace", &e))?;
    let mut nft = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed("cannot run nsenter nft", &e))?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = nft.stdin.take().expect("piped");
        stdin
            .write_all(rules.as_bytes())
            .await
            .map_err(|e| failed("nft", &e))?;
    }
    let output = nft
        .wait_with_output()
        .await
        .map_err(|e| failed("nft", &e))?;
    if !output.status.success() {
        return Err(failed(
            "nft refused the egress rules",
            &String::from_utf8_lossy(&output.stderr).trim(),
        ));
    }
    let owner = netns_owner(&netns).map_err(|e| failed("the namespace's owner", &e))?;
    let (mut ready_read, ready_write) = std::io::pipe().map_err(|e| failed("pipe", &e))?;
    let mut command = Command::new("slirp4netns");
    command
        .args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-seccomp",
            "--userns-path=/proc/self/fd/3",
            "--netns-type=path",
            "--ready-fd=5",
            "--exit-fd=6",
            "/proc/self/fd/4",
            "tap0",
        ])
        .current_dir("/")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| failed("log", &e))?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    ChildSetup {
        cgroup_procs,
        fds: vec![
            (owner, 3),
            (netns.into(), 4),
            (ready_write.into(), 5),
            (exit, 6),
        ],
        ids: Some(ids),
        seccomp: Vec::new(),
    }
    .apply(&mut command);
    let child = command
        .spawn()
        .map_err(|e| failed("cannot start slirp4netns", &e))?;
    drop(command);
    // Reaped by tokio in the background; stop kills it with the cgroup.
    drop(child);
    let ready = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        ready_read.read(&mut byte).map(|n| n == 1)
    });
    match tokio::time::timeout(Duration::from_secs(10), ready).await {
        Ok(Ok(Ok(true))) => Ok(()),
        Ok(Ok(Ok(false))) => Err(failed(
            "slirp4netns exited before the network was up",
            &"see network.log",
        )),
        Ok(Ok(Err(error))) => Err(failed("slirp4netns", &error)),
        Ok(Err(error)) => Err(failed("slirp4netns", &error)),
        Err(_) => Err(failed("slirp4netns", &"not ready within 10 s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_refuses_the_host_metadata_and_what_the_operator_denies() {
        let host: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let policy = EgressPolicy {
            allow: Vec::new(),
            deny: vec!["10.8.0.0/16".parse().unwrap()],
        };
        let rules = ruleset(&policy, &host);
        assert!(rules.contains("192.0.2.2/32"), "{rules}");
        assert!(rules.contains("fd00::2/128"), "{rules}");
        assert!(rules.contains("169.254.0.0/16"), "{rules}");
        assert!(rules.contains("10.8.0.0/16"), "{rules}");
        assert!(rules.contains(SLIRP_HOST), "{rules}");
        assert!(
            !rules.contains("reject with icmpx type admin-prohibited\n    }"),
            "{rules}"
        );
        let allow_only = ruleset(
            &EgressPolicy {
                allow: vec!["203.0.113.0/24".parse().unwrap()],
                deny: Vec::new(),
            },
            &host,
        );
        assert!(
            allow_only.contains("ip daddr { 203.0.113.0/24 } accept"),
            "{allow_only}"
        );
        assert!(allow_only.contains(&format!("ip daddr {SLIRP_DNS} accept")));
        assert!(
            allow_only
                .trim_end()
                .ends_with("reject with icmpx type admin-prohibited\n  }\n}")
        );
    }
}
