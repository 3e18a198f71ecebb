//! Where browsers reach a notebook: its origin, its base path, and how the gateway finds the
//! notebook a request is for.

use atelier_domain::NotebookId;

/// How notebooks are told apart on the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Each notebook is its own origin, `{id}.{host}`: a page one tenant serves cannot read
    /// another's notebook. The default.
    #[default]
    Host,
    /// Every notebook under `/{id}/` of one shared origin. **Unsafe with several tenants**: a
    /// page served by one notebook runs on the same origin as all the others and can read and
    /// drive them. For a single user who cannot have wildcard DNS.
    Path,
}

/// The gateway's public address (what browsers use, e.g. `http://localhost:8081` or
/// `https://nb.example.com` behind a TLS-terminating proxy) and the [`Routing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    secure: bool,
    /// Lower case, without port; IPv6 literals in brackets.
    host: String,
    /// Absent when it is the scheme's default.
    port: Option<u16>,
    routing: Routing,
}

/// The notebook a request is for, as its `Host` and path say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Notebook(NotebookId),
    /// A path-form URL on the bare host while routing by host: where it lives now.
    Moved(NotebookId),
    Nowhere,
}

impl Addressing {
    /// `public_url` is `scheme://host[:port]` with no path; `https` when a TLS-terminating
    /// proxy is in front. Host routing needs a host name whose subdomains resolve to the
    /// gateway (`localhost` does in browsers; elsewhere a wildcard DNS record).
    pub fn new(public_url: &str, routing: Routing) -> Result<Addressing, String> {
        let url = url::Url::parse(public_url)
            .map_err(|e| format!("gateway_public_url {public_url:?}: {e}"))?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "gateway_public_url {public_url:?}: the scheme must be http or https, not {other}"
                ));
            }
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "gateway_public_url {public_url:?}: only scheme://host[:port], without a path"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "gateway_public_url {public_url:?}: must not carry credentials"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) if routing == Routing::Path => ip.to_string(),
            Some(url::Host::Ipv6(ip)) if routing == Routing::Path => format!("[{ip}]"),
            Some(_) => {
                return Err(format!(
                    "gateway_public_url {public_url:?}: every notebook is its own origin \
                     ({{id}}.HOST), which needs a host name, not an IP address: use \
                     http://localhost:PORT on this machine, or a name with a wildcard DNS \
                     record (*.nb.example.com)"
                ));
            }
            None => return Err(format!("gateway_public_url {public_url:?}: no host")),
        };
        Ok(Addressing {
            secure,
            host,
            port: url.port(),
            routing,
        })
    }

    /// The default for a gateway bound to `listen` with no public URL configured:
    /// `http://localhost:PORT` (subdomains of `localhost` are loopback in browsers).
    pub fn local(port: u16, routing: Routing) -> Addressing {
        Addressing {
            secure: false,
            host: "localhost".to_owned(),
            port: (port != 80).then_some(port),
            routing,
        }
    }

    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// Served over https (so cookies are `Secure`).
    pub fn secure(&self) -> bool {
        self.secure
    }

    pub fn scheme(&self) -> &'static str {
        if self.secure { "https" } else { "http" }
    }

    /// The public host (no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn port_suffix(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    /// `http://localhost:8081`: the gateway itself (and, routing by path, every notebook).
    pub fn gateway_origin(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.host, self.port_suffix())
    }

    /// The notebook's web origin: `http://{id}.localhost:8081` when routing by host.
    pub fn origin(&self, id: &NotebookId) -> String {
        match self.routing {
            Routing::Host => format!(
                "{}://{id}.{}{}",
                self.scheme(),
                self.host,
                self.port_suffix()
            ),
            Routing::Path => self.gateway_origin(),
        }
    }

    /// The path JupyterLab serves under: `/`, or `/{id}/` when routing by path.
    pub fn base_path(&self, id: &NotebookId) -> String {
        match self.routing {
            Routing::Host => "/".to_owned(),
            Routing::Path => format!("/{id}/"),
        }
    }

    /// What `url` shows: the notebook's JupyterLab.
    pub fn lab_url(&self, id: &NotebookId) -> String {
        format!("{}{}lab", self.origin(id), self.base_path(id))
    }

    /// [`Addressing::lab_url`] with `{id}` in place of the notebook's id, for people.
    pub fn lab_url_template(&self) -> String {
        match self.routing {
            Routing::Host => format!(
                "{}://{{id}}.{}{}/lab",
                self.scheme(),
                self.host,
                self.port_suffix()
            ),
            Routing::Path => format!("{}/{{id}}/lab", self.gateway_origin()),
        }
    }

    /// The notebook a request with this `Host` (or `:authority`) and path is for. The port
    /// is not compared: a tunnel (`ssh -L`) may put the gateway behind another one.
    pub(crate) fn target(&self, host: Option<&str>, path: &str) -> Target {
        let from_path = || {
            path.strip_prefix('/')
                .and_then(|p| p.split('/').next())
                .and_then(|first| first.parse::<NotebookId>().ok())
        };
        match self.routing {
            Routing::Path => from_path().map_or(Target::Nowhere, Target::Notebook),
            Routing::Host => {
                let Some(name) = host.map(strip_port) else {
                    return Target::Nowhere;
                };
                let name = name.to_ascii_lowercase();
                if name == self.host {
                    return from_path().map_or(Target::Nowhere, Target::Moved);
                }
                // Only the canonical form of the id: one host, one origin, one cookie jar.
                name.strip_suffix(&self.host)
                    .and_then(|label| label.strip_suffix('.'))
                    .and_then(|label| {
                        let id = label.parse::<NotebookId>().ok()?;
                        (id.to_string() == label).then_some(id)
                    })
                    .map_or(Target::Nowhere, Target::Notebook)
            }
        }
    }
}

/// `host[:port]` → `host` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NotebookId {
        "4f2c9a52-1b6e-4c3d-9e8f-0a1b2c3d4e5f".parse().unwrap()
    }

    #[test]
    fn host_routing_gives_each_notebook_its_own_origin() {
        let local = Addressing::local(8081, Routing::Host);
        assert_eq!(
            local.lab_url(&id()),
            format!("http://{}.localhost:8081/lab", id())
        );
        assert_eq!(local.base_path(&id()), "/");
        assert_eq!(local.lab_url_template(), "http://{id}.localhost:8081/lab");
        let public = Addressing::new("https://NB.example.com", Routing::Host).unwrap();
        assert_eq!(
            public.origin(&id()),
            format!("https://{}.nb.example.com", id())
        );
        assert!(public.secure());
    }

    #[test]
    fn path_routing_keeps_the_shared_origin() {
        let path = Addressing::new("http://127.0.0.1:8081", Routing::Path).unwrap();
        assert_eq!(
            path.lab_url(&id()),
            format!("http://127.0.0.1:8081/{}/lab", id())
        );
        assert_eq!(
            path.target(Some("127.0.0.1:8081"), &format!("/{}/api", id())),
            Target::Notebook(id())
        );
    }

    #[test]
    fn host_routing_refuses_addresses_and_paths() {
        for bad in [
            "http://127.0.0.1:8081",
            "http://[::1]:8081",
            "ftp://nb.example.com",
            "https://nb.example.com/prefix",
            "https://user:pw@nb.example.com",
            "nb.example.com",
        ] {
            assert!(Addressing::new(bad, Routing::Host).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_host_header_selects_the_notebook() {
        let a = Addressing::local(8081, Routing::Host);
        let host = format!("{}.localhost:8081", id());
        assert_eq!(a.target(Some(&host), "/lab"), Target::Notebook(id()));
        // Any port (a tunnel), any case.
        let upper = format!("{}.LOCALHOST:9999", id()).to_uppercase();
        assert_eq!(a.target(Some(&upper), "/"), Target::Notebook(id()));
        // The old path form on the bare host moved.
        assert_eq!(
            a.target(Some("localhost:8081"), &format!("/{}/lab", id())),
            Target::Moved(id())
        );
        for (host, path) in [
            (None, "/lab".to_owned()),
            (Some("localhost:8081".to_owned()), "/lab".to_owned()),
            (Some(format!("{}.evil.localhost", id())), "/".to_owned()),
            (Some(format!("x.{}.localhost", id())), "/".to_owned()),
            (Some(format!("{}localhost", id())), "/".to_owned()),
            (Some(format!("{}.example.com", id())), "/".to_owned()),
            (Some("localhost.localhost".to_owned()), "/".to_owned()),
            (
                Some(format!("{}.localhost", &id().to_string()[..8])),
                "/".to_owned(),
            ),
        ] {
            assert_eq!(
                a.target(host.as_deref(), &path),
                Target::Nowhere,
                "{host:?}"
            );
        }
    }

    #[test]
    fn ports_are_stripped_but_ipv6_literals_kept() {
        assert_eq!(strip_port("a.localhost:8081"), "a.localhost");
        assert_eq!(strip_port("a.localhost"), "a.localhost");
        assert_eq!(strip_port("[::1]:8081"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
