//! The service spec: what to run. Field names here are a public contract (API,
//! CLI, dashboard, scripts); add fields beside them, never rename.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{check_dns_label, is_env_name};
use crate::validation::{check_range, check_text, is_bidi_control, ValidationError};

pub const MAX_ENV_VARS: usize = 200;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_ROUTES: usize = 50;
/// Volumes one service may declare.
pub const MAX_VOLUMES: usize = 8;
pub const MAX_REPLICAS: u32 = 100;
pub const MAX_COMMAND_BYTES: usize = 4096;
pub const DEFAULT_REF: &str = "main";

/// Where the code comes from. `ref` is a branch, tag or commit; a deploy resolves it
/// to an exact commit SHA on the control plane so every node runs the same code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Repository URL: `https://`, `http://`, `ssh://`, `git://`, `file://` or
    /// scp-like `user@host:path`.
    #[schema(example = "https://github.com/acme/web.git")]
    pub git: String,
    #[serde(rename = "ref", default = "default_ref")]
    #[schema(example = "main")]
    pub git_ref: String,
}

fn default_ref() -> String {
    DEFAULT_REF.to_owned()
}

/// A directory of the service that outlives its releases: `<apps>/<service>/volumes/<name>`
/// on every node that runs it, reached by the app at `path` in its working
/// directory (a link there, and, in the sandbox, the one writable place besides
/// the release and `$HOME`). Deleted with the service, not when it leaves the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// A DNS label, unique in the service; names the directory on the node.
    #[schema(example = "data")]
    pub name: String,
    /// Relative to the app's working directory: `data`, `storage/app`. Parts of
    /// letters, digits, `.`, `_` and `-`, none `.` or `..`, at most 200 characters.
    #[schema(example = "data")]
    pub path: String,
}

/// One way traffic reaches the service: a host, a path prefix, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "app.example.com")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/api")]
    pub path: Option<String>,
    /// Remove the matched path prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    // The policy fields: the same as `route::RouteOptions` (`options()`), spelled
    // out because serde's flatten does not work with deny_unknown_fields.
    /// `round_robin` (default) or `least_connections` across the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<crate::route::Balance>,
    /// Largest request body in MiB, 1–10240 (default 64); a larger one gets 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_mb: Option<u32>,
    /// How long connecting to an instance may take, 50–60000 ms (default 3000);
    /// then the next instance is tried for idempotent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u32>,
    /// How long the app may take to send its response headers, 1–3600 s (default
    /// 60); then 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_secs: Option<u32>,
    /// Extra attempts on other instances after a failed connect, idempotent
    /// requests only, 0–5 (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

impl RouteSpec {
    /// The policy fields this route sets.
    pub fn options(&self) -> crate::route::RouteOptions {
        crate::route::RouteOptions {
            balance: self.balance,
            max_body_mb: self.max_body_mb,
            connect_timeout_ms: self.connect_timeout_ms,
            response_timeout_secs: self.response_timeout_secs,
            retries: self.retries,
        }
    }
}

/// How the agent decides an instance is healthy: an HTTP GET of `path` (2xx or 3xx),
/// else a `command` run in the release directory (exit 0; `PORT` is set), else a
/// TCP connect to `PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/healthz")]
    pub path: Option<String>,
    /// A shell command instead of an HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_start_period")]
    pub start_period_secs: u32,
}

fn default_interval() -> u32 {
    5
}
fn default_timeout() -> u32 {
    2
}
fn default_retries() -> u32 {
    3
}
fn default_start_period() -> u32 {
    30
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: None,
            command: None,
            interval_secs: default_interval(),
            timeout_secs: default_timeout(),
            retries: default_retries(),
            start_period_secs: default_start_period(),
        }
    }
}

/// Limits enforced with cgroups on the node. Absent means the node default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// CPU in thousandths of a core (500 = half a core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// Which nodes may run the service: by name, by labels (all must match), or any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// One replica on every eligible node (a log shipper, an edge app);
    /// `replicas` is then not used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_node: bool,
    /// Move this service's replicas off a node while it is unreachable (they move
    /// back when it reports again). Off by default: a node that lost its link keeps
    /// serving what it runs, and nothing is started elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reschedule: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A supervised, sandboxed process (the built-in supervisor).
    #[default]
    Process,
}

/// Everything a user says about a service. The app listens on the port given in
/// its `PORT` environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[schema(example = "web")]
    pub name: String,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "npm ci && npm run build")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "npm start")]
    pub run: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values are secret: never shown again by the API.
    #[serde(default)]
    pub secrets: BTreeSet<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub health: HealthSpec,
    #[serde(default)]
    pub resources: ResourcesSpec,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub placement: PlacementSpec,
    #[serde(default)]
    pub runtime: Runtime,
    /// Directories that outlive releases (absent when none, so documents of
    /// services without any keep their hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

fn default_replicas() -> u32 {
    1
}

/// A partial update: every present field replaces the stored one. A secret value
/// equal to [`REDACTED`] keeps the stored value, so a client can send back what it
/// read without wiping secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// `null` removes the build command.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schema(value_type = Option<String>)]
    pub build: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schema(value_type = Option<String>)]
    pub run: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeSpec>>,
}

/// Shown instead of a secret value.
pub const REDACTED: &str = "********";

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(deserializer).map(Some)
    }
}

impl ServiceSpec {
    /// Applies a patch; secret values sent back as [`REDACTED`] keep their stored value.
    pub fn apply(&self, patch: ServicePatch) -> ServiceSpec {
        let mut next = self.clone();
        if let Some(name) = patch.name {
            next.name = name;
        }
        if let Some(source) = patch.source {
            next.source = source;
        }
        if let Some(build) = patch.build {
            next.build = build;
        }
        if let Some(run) = patch.run {
            next.run = run;
        }
        match patch.secrets {
            Some(secrets) => next.secrets = secrets,
            // A variable removed from env is no longer secret either.
            None if patch.env.is_some() => {
                if let Some(env) = &patch.env {
                    next.secrets.retain(|name| env.contains_key(name));
                }
            }
            None => {}
        }
        if let Some(mut env) = patch.env {
            for (key, value) in env.iter_mut() {
                if value == REDACTED {
                    if let Some(old) = self.env.get(key) {
                        value.clone_from(old);
                    }
                }
            }
            next.env = env;
        }
        if let Some(routes) = patch.routes {
            next.routes = routes;
        }
        if let Some(health) = patch.health {
            next.health = health;
        }
        if let Some(resources) = patch.resources {
            next.resources = resources;
        }
        if let Some(replicas) = patch.replicas {
            next.replicas = replicas;
        }
        if let Some(placement) = patch.placement {
            next.placement = placement;
        }
        if let Some(runtime) = patch.runtime {
            next.runtime = runtime;
        }
        if let Some(volumes) = patch.volumes {
            next.volumes = volumes;
        }
        next
    }

    /// Refuses a patch that would reveal a secret: a name may leave `secrets` while
    /// staying in `env` only if the patch also sends it a new value (not the
    /// redaction placeholder). Otherwise every viewer could read the old secret.
    pub fn check_patch(&self, patch: &ServicePatch) -> Result<(), ValidationError> {
        let Some(secrets) = &patch.secrets else {
            return Ok(());
        };
        let env = patch.env.as_ref().unwrap_or(&self.env);
        for name in self
            .secrets
            .iter()
            .filter(|name| !secrets.contains(*name) && env.contains_key(*name))
        {
            let new_value = patch.env.as_ref().and_then(|env| env.get(name));
            let replaced = new_value
                .is_some_and(|value| value != REDACTED && Some(value) != self.env.get(name));
            if !replaced {
                return Err(ValidationError::new(
                    "secrets",
                    format!(
                        "'{}' stays secret unless you also send it a new value",
                        printable(name)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The spec as the API shows it: secret values replaced by [`REDACTED`].
    pub fn redacted(&self) -> ServiceSpec {
        let mut shown = self.clone();
        for (key, value) in shown.env.iter_mut() {
            if self.secrets.contains(key) {
                *value = REDACTED.to_owned();
            }
        }
        shown
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        check_dns_label("name", &self.name)?;
        validate_git_url("source.git", &self.source.git)?;
        validate_git_ref("source.ref", &self.source.git_ref)?;
        if let Some(build) = &self.build {
            check_command("build", build)?;
        }
        if let Some(run) = &self.run {
            check_command("run", run)?;
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(ValidationError::new(
                "env",
                format!("at most {MAX_ENV_VARS} variables"),
            ));
        }
        for (key, value) in &self.env {
            validate_env_var(&format!("env.{key}"), key, value)?;
        }
        for secret in &self.secrets {
            if !self.env.contains_key(secret) {
                return Err(ValidationError::new(
                    "secrets",
                    format!("'{}' is not a variable in env", printable(secret)),
                ));
            }
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(ValidationError::new(
                "routes",
                format!("at most {MAX_ROUTES} routes"),
            ));
        }
        for (index, route) in self.routes.iter().enumerate() {
            validate_route(index, route)?;
        }
        validate_health(&self.health)?;
        validate_resources(&self.resources)?;
        check_range("replicas", self.replicas.into(), 0, MAX_REPLICAS.into())?;
        for (index, node) in self.placement.nodes.iter().enumerate() {
            check_dns_label(&format!("placement.nodes[{index}]"), node)?;
        }
        for (key, value) in &self.placement.labels {
            validate_label(&format!("placement.labels.{key}"), key, value)?;
        }
        validate_volumes(&self.volumes)
    }
}

pub fn validate_volumes(volumes: &[VolumeSpec]) -> Result<(), ValidationError> {
    if volumes.len() > MAX_VOLUMES {
        return Err(ValidationError::new(
            "volumes",
            format!("at most {MAX_VOLUMES} volumes"),
        ));
    }
    for (index, volume) in volumes.iter().enumerate() {
        check_dns_label(&format!("volumes[{index}].name"), &volume.name)?;
        let field = format!("volumes[{index}].path");
        validate_volume_path(&field, &volume.path)?;
        for earlier in &volumes[..index] {
            if earlier.name == volume.name {
                return Err(ValidationError::new(
                    format!("volumes[{index}].name"),
                    format!("'{}' is the name of another volume", volume.name),
                ));
            }
            let nested = |outer: &str, inner: &str| {
                inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            if nested(&earlier.path, &volume.path) || nested(&volume.path, &earlier.path) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "'{}' overlaps the volume at '{}'",
                        volume.path, earlier.path
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A volume's place in the app's directory: relative, plain parts only, so
/// joining it to a release never leads outside it.
pub fn validate_volume_path(field: &str, path: &str) -> Result<(), ValidationError> {
    let refuse = |why: &str| Err(ValidationError::new(field, why));
    if path.is_empty() || path.len() > 200 {
        return refuse("must be 1 to 200 characters");
    }
    if path.starts_with('/') {
        return refuse("must be relative to the app's directory, like 'data'");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return refuse("must not have empty, '.' or '..' parts");
        }
        let plain = part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain {
            return refuse("may hold only letters, digits, '.', '_', '-' and '/'");
        }
    }
    Ok(())
}

/// Labels (on nodes, in placement): keys and values are short, printable and
/// free of separators that would make them ambiguous in a selector.
pub fn validate_label(field: &str, key: &str, value: &str) -> Result<(), ValidationError> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if !key_ok {
        return Err(ValidationError::new(
            field,
            "label keys are 1-63 characters of a-z, A-Z, 0-9, '-', '_', '.' and '/'",
        ));
    }
    let value_ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !value_ok {
        return Err(ValidationError::new(
            field,
            "label values are 0-63 characters of a-z, A-Z, 0-9, '-', '_' and '.'",
        ));
    }
    Ok(())
}

pub fn validate_env_var(field: &str, key: &str, value: &str) -> Result<(), ValidationError> {
    validate_env_entry(field, field, key, value)
}

/// As [`validate_env_var`], where the name and the value arrive in different
/// fields (`PUT .../env/{name}` with `{"value"}`): each error names its own.
pub fn validate_env_entry(
    name_field: &str,
    value_field: &str,
    key: &str,
    value: &str,
) -> Result<(), ValidationError> {
    let field = value_field;
    if !is_env_name(key) {
        return Err(ValidationError::new(
            name_field,
            "variable names are letters, digits and '_', not starting with a digit",
        ));
    }
    if value.len() > MAX_ENV_VALUE_BYTES {
        return Err(ValidationError::new(
            field,
            format!("values are at most {MAX_ENV_VALUE_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(field, "values must not contain NUL"));
    }
    Ok(())
}

fn check_command(field: &str, command: &str) -> Result<(), ValidationError> {
    if command.trim().is_empty() {
        return Err(ValidationError::new(
            field,
            "must not be empty; omit it to detect it from the repository",
        ));
    }
    check_text(field, command, MAX_COMMAND_BYTES)
}

fn validate_route(index: usize, route: &RouteSpec) -> Result<(), ValidationError> {
    if route.host.is_none() && route.path.is_none() {
        return Err(ValidationError::new(
            format!("routes[{index}]"),
            "a route needs a host, a path or both",
        ));
    }
    if let Some(host) = &route.host {
        validate_host(&format!("routes[{index}].host"), host)?;
    }
    if let Some(path) = &route.path {
        validate_path(&format!("routes[{index}].path"), path)?;
    }
    use crate::route::{CONNECT_TIMEOUT_MS, MAX_BODY_MB, RESPONSE_TIMEOUT_SECS, RETRIES};
    for (name, value, (min, max)) in [
        ("max_body_mb", route.max_body_mb, MAX_BODY_MB),
        (
            "connect_timeout_ms",
            route.connect_timeout_ms,
            CONNECT_TIMEOUT_MS,
        ),
        (
            "response_timeout_secs",
            route.response_timeout_secs,
            RESPONSE_TIMEOUT_SECS,
        ),
        ("retries", route.retries, RETRIES),
    ] {
        if let Some(value) = value {
            check_range(
                &format!("routes[{index}].{name}"),
                u64::from(value),
                min,
                max,
            )?;
        }
    }
    Ok(())
}

/// A host name: lowercase DNS labels separated by dots, optionally starting with a
/// `*.` wildcard, at most 253 characters.
pub fn validate_host(field: &str, host: &str) -> Result<(), ValidationError> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = host.len() <= 253 && !name.is_empty() && name.split('.').all(crate::is_dns_label);
    if ok {
        return Ok(());
    }
    Err(ValidationError::new(
        field,
        "must be a lowercase host name such as app.example.com (optionally *.example.com)",
    ))
}

/// A URL path prefix: starts with `/`, at most 1024 bytes, only unreserved and
/// sub-delimiter characters, no `.`/`..` segments (which proxies normalize away and
/// attackers use to escape a prefix).
pub fn validate_path(field: &str, path: &str) -> Result<(), ValidationError> {
    if !path.starts_with('/') {
        return Err(ValidationError::new(field, "must start with '/'"));
    }
    if path.len() > 1024 {
        return Err(ValidationError::new(field, "must be at most 1024 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c);
    if !path.chars().all(allowed) {
        return Err(ValidationError::new(
            field,
            "may contain only letters, digits and -._~!$&'()*+,;=:@%/",
        ));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(ValidationError::new(
            field,
            "must not contain '.' or '..' segments",
        ));
    }
    Ok(())
}

fn validate_health(health: &HealthSpec) -> Result<(), ValidationError> {
    if let Some(path) = &health.path {
        validate_path("health.path", path)?;
    }
    if let Some(command) = &health.command {
        check_command("health.command", command)?;
        if health.path.is_some() {
            return Err(ValidationError::new(
                "health.command",
                "give either health.path or health.command, not both",
            ));
        }
    }
    check_range("health.interval_secs", health.interval_secs.into(), 1, 3600)?;
    check_range("health.timeout_secs", health.timeout_secs.into(), 1, 600)?;
    check_range("health.retries", health.retries.into(), 1, 100)?;
    check_range(
        "health.start_period_secs",
        health.start_period_secs.into(),
        0,
        3600,
    )?;
    Ok(())
}

fn validate_resources(resources: &ResourcesSpec) -> Result<(), ValidationError> {
    if let Some(memory) = resources.memory_mb {
        check_range("resources.memory_mb", memory.into(), 16, 1024 * 1024)?;
    }
    if let Some(cpu) = resources.cpu_millis {
        check_range("resources.cpu_millis", cpu.into(), 10, 256_000)?;
    }
    if let Some(pids) = resources.pids {
        check_range("resources.pids", pids.into(), 8, 1_000_000)?;
    }
    Ok(())
}

/// Accepts the transports git itself treats as safe and nothing that git would
/// interpret as a command or an option (`ext::`, `fd::`, a leading `-`).
pub fn validate_git_url(field: &str, url: &str) -> Result<(), ValidationError> {
    if url.is_empty() || url.len() > 2048 {
        return Err(ValidationError::new(field, "must be 1-2048 bytes"));
    }
    if url.starts_with('-') {
        return Err(ValidationError::new(field, "must not start with '-'"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new(
            field,
            "must not contain spaces or control characters",
        ));
    }
    let lower = url.to_ascii_lowercase();
    const SCHEMES: [&str; 6] = [
        "https://",
        "http://",
        "ssh://",
        "git://",
        "file://",
        "git+ssh://",
    ];
    if let Some(scheme) = SCHEMES.iter().find(|s| lower.starts_with(**s)) {
        let rest = &url[scheme.len()..];
        if rest.is_empty() || (*scheme != "file://" && rest.starts_with('/')) {
            return Err(ValidationError::new(field, "is missing a host"));
        }
        if *scheme != "file://" && dash_in_authority(rest) {
            // ssh://-oProxyCommand=... would hand ssh an option (CVE-2017-1000117).
            return Err(ValidationError::new(
                field,
                "the user and host must not start with '-'",
            ));
        }
        if *scheme == "file://" && rest.contains('%') {
            // git percent-decodes file:// paths; a check on the literal path could
            // be walked around with %2e%2e.
            return Err(ValidationError::new(
                field,
                "file:// paths must not contain '%'",
            ));
        }
        if *scheme == "file://" && !rest.starts_with('/') {
            return Err(ValidationError::new(
                field,
                "file:// URLs need an absolute path (file:///srv/repo.git)",
            ));
        }
        if rest.split('/').any(|segment| segment == "..") {
            return Err(ValidationError::new(field, "must not contain '..'"));
        }
        return Ok(());
    }
    if lower.contains("::") {
        return Err(ValidationError::new(
            field,
            "remote helpers such as ext:: are not allowed",
        ));
    }
    // scp-like syntax: user@host:path
    if let Some((host_part, path)) = url.split_once(':') {
        let host_ok = !host_part.is_empty()
            && !host_part.contains('/')
            && host_part.contains('@')
            && !host_part.starts_with('@')
            && !dash_in_authority(host_part);
        if host_ok && !path.is_empty() && !path.split('/').any(|segment| segment == "..") {
            return Ok(());
        }
    }
    Err(ValidationError::new(
        field,
        "must be an https://, http://, ssh://, git://, file:// or user@host:path URL",
    ))
}

/// Whether the user or host of `authority...` (what follows `scheme://`, or the
/// `user@host` of scp syntax) starts with '-', which ssh would read as an option.
fn dash_in_authority(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    let host = host.trim_start_matches('[');
    host.starts_with('-') || user.is_some_and(|user| user.starts_with('-'))
}

/// A branch, tag or commit, following `git check-ref-format` plus: no leading `-`
/// (it would be read as an option) and at most 255 bytes.
pub fn validate_git_ref(field: &str, git_ref: &str) -> Result<(), ValidationError> {
    let bad = git_ref.is_empty()
        || git_ref.len() > 255
        || git_ref.starts_with('-')
        || git_ref.starts_with('/')
        || git_ref.ends_with('/')
        || git_ref.ends_with('.')
        || git_ref.ends_with(".lock")
        || git_ref.contains("..")
        || git_ref.contains("@{")
        || git_ref.contains("//")
        || git_ref == "@"
        || git_ref.chars().any(|c| {
            c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c) || is_bidi_control(c)
        })
        || git_ref.split('/').any(|part| part.starts_with('.'));
    if bad {
        return Err(ValidationError::new(
            field,
            "must be a branch, tag or commit name (see git check-ref-format)",
        ));
    }
    Ok(())
}

/// True for a full hexadecimal commit id (SHA-1 or SHA-256).
pub fn is_commit_sha(value: &str) -> bool {
    (value.len() == 40 || value.len() == 64) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Makes user text safe to echo inside an error message.
fn printable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web",
            "source": {"git": "https://example.com/acme/web.git"},
        }))
        .expect("minimal spec parses")
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = spec();
        assert_eq!(spec.source.git_ref, "main");
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.health.interval_secs, 5);
        spec.validate().expect("valid");
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/a/b.git",
            "http://127.0.0.1:9418/x",
            "ssh://git@host/repo.git",
            "git://127.0.0.1/repo",
            "file:///tmp/repo.git",
            "git@github.com:acme/web.git",
        ] {
            assert!(validate_git_url("g", ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "fd::17",
            "https://",
            "file://relative/path",
            "file:///tmp/../etc",
            "file:///tmp/a/%2e%2e/%2e%2e/etc",
            "https://host/a b",
            "https://host/\nx",
            "/just/a/path",
            "",
            "ssh://-oProxyCommand=touch${IFS}/tmp/x/repo",
            "ssh://-oProxyCommand=x@host/repo",
            "git+ssh://git@-oProxyCommand=x/repo",
            "ssh://[-oProxyCommand=x]/repo",
            "-oProxyCommand=x@host:repo",
            "git@-oProxyCommand=x:repo",
        ] {
            assert!(validate_git_url("g", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_are_named_plain_relative_and_apart() {
        let with = |volumes: Vec<(&str, &str)>| {
            let mut spec = spec();
            spec.volumes = volumes
                .into_iter()
                .map(|(name, path)| VolumeSpec {
                    name: name.into(),
                    path: path.into(),
                })
                .collect();
            spec.validate().err().map(|error| error.field)
        };
        assert_eq!(with(vec![("data", "data"), ("up", "storage/app")]), None);
        for (volumes, field) in [
            (vec![("Data", "data")], "volumes[0].name"),
            (vec![("data", "/var/lib")], "volumes[0].path"),
            (vec![("data", "../up")], "volumes[0].path"),
            (vec![("data", "a/./b")], "volumes[0].path"),
            (vec![("data", "a//b")], "volumes[0].path"),
            (vec![("data", "data/")], "volumes[0].path"),
            (vec![("data", "da ta")], "volumes[0].path"),
            (vec![("data", "$(id)")], "volumes[0].path"),
            (vec![("data", "")], "volumes[0].path"),
            (vec![("a", "x"), ("a", "y")], "volumes[1].name"),
            (vec![("a", "x"), ("b", "x/y")], "volumes[1].path"),
            (vec![("a", "x/y"), ("b", "x")], "volumes[1].path"),
        ] {
            assert_eq!(with(volumes.clone()).as_deref(), Some(field), "{volumes:?}");
        }
        let many = (0..=MAX_VOLUMES)
            .map(|n| (format!("v{n}"), format!("p{n}")))
            .collect::<Vec<_>>();
        let many = many.iter().map(|(n, p)| (n.as_str(), p.as_str())).collect();
        assert_eq!(with(many).as_deref(), Some("volumes"));
        // None declared: absent from the JSON, so documents keep their hash.
        let plain = serde_json::to_value(spec()).expect("json");
        assert!(plain.get("volumes").is_none(), "{plain}");
    }

    #[test]
    fn git_refs() {
        for ok in [
            "main",
            "release/1.2",
            "v1.0.0",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(validate_git_ref("r", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-f",
            "--upload-pack=x",
            "a..b",
            "a b",
            "a\nb",
            "x.lock",
            "a/",
            "/a",
            "HEAD@{1}",
            "a~1",
            "a^",
            "a:b",
            ".hidden",
            "a/.b",
            "$(id)",
            "safe\u{202E}txt.exe",
            "main\u{2066}",
        ] {
            // "$(id)" is a legal ref name for git; it is only dangerous through a
            // shell, which we never use, so it passes validation.
            if bad == "$(id)" {
                assert!(validate_git_ref("r", bad).is_ok());
                continue;
            }
            assert!(validate_git_ref("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let mut bad = spec();
        bad.name = "Web_App".into();
        assert_eq!(bad.validate().unwrap_err().field, "name");

        let mut bad = spec();
        bad.env.insert("1BAD".into(), "x".into());
        assert_eq!(bad.validate().unwrap_err().field, "env.1BAD");

        let mut bad = spec();
        bad.secrets.insert("MISSING".into());
        assert_eq!(bad.validate().unwrap_err().field, "secrets");

        let mut bad = spec();
        bad.routes.push(RouteSpec {
            path: Some("/a/../b".into()),
            ..RouteSpec::default()
        });
        assert_eq!(bad.validate().unwrap_err().field, "routes[0].path");

        // Each policy field is checked against its range, and named.
        for (route, field) in [
            (
                RouteSpec {
                    max_body_mb: Some(0),
                    ..RouteSpec::default()
                },
                "routes[0].max_body_mb",
            ),
            (
                RouteSpec {
                    max_body_mb: Some(10 * 1024 + 1),
                    ..RouteSpec::default()
                },
                "routes[0].max_body_mb",
            ),
            (
                RouteSpec {
                    connect_timeout_ms: Some(10),
                    ..RouteSpec::default()
                },
                "routes[0].connect_timeout_ms",
            ),
            (
                RouteSpec {
                    response_timeout_secs: Some(3601),
                    ..RouteSpec::default()
                },
                "routes[0].response_timeout_secs",
            ),
            (
                RouteSpec {
                    retries: Some(6),
                    ..RouteSpec::default()
                },
                "routes[0].retries",
            ),
        ] {
            let mut bad = spec();
            bad.routes.push(RouteSpec {
                path: Some("/api".into()),
                ..route
            });
            assert_eq!(bad.validate().unwrap_err().field, field);
        }
        let mut good = spec();
        good.routes.push(RouteSpec {
            path: Some("/api".into()),
            balance: Some(crate::route::Balance::LeastConnections),
            max_body_mb: Some(512),
            connect_timeout_ms: Some(500),
            response_timeout_secs: Some(300),
            retries: Some(0),
            ..RouteSpec::default()
        });
        good.validate().unwrap();
        let policy = good.routes[0].options().policy();
        assert_eq!(
            (
                policy.balance,
                policy.max_body_bytes,
                policy.connect_timeout_ms,
                policy.response_timeout_ms,
                policy.retries
            ),
            (
                crate::route::Balance::LeastConnections,
                512 << 20,
                500,
                300_000,
                0
            )
        );
        assert_eq!(
            RouteSpec::default().options().policy(),
            crate::route::RoutePolicy::default()
        );

        let mut bad = spec();
        bad.replicas = 1_000_000;
        assert_eq!(bad.validate().unwrap_err().field, "replicas");

        let mut bad = spec();
        bad.run = Some("node server.js\u{1b}[2J".into());
        assert_eq!(bad.validate().unwrap_err().field, "run");
    }

    #[test]
    fn patch_keeps_redacted_secrets() {
        let mut stored = spec();
        stored.env.insert("TOKEN".into(), "s3cret".into());
        stored.env.insert("MODE".into(), "prod".into());
        stored.secrets.insert("TOKEN".into());
        let shown = stored.redacted();
        assert_eq!(shown.env["TOKEN"], REDACTED);
        let patch = ServicePatch {
            env: Some(shown.env.clone()),
            build: Some(None),
            ..ServicePatch::default()
        };
        let next = stored.apply(patch);
        assert_eq!(next.env["TOKEN"], "s3cret");
        assert_eq!(next.build, None);
    }

    #[test]
    fn a_patch_cannot_unmask_a_secret() {
        let mut stored = spec();
        stored.env.insert("TOKEN".into(), "s3cret".into());
        stored.secrets.insert("TOKEN".into());
        let unmask = ServicePatch {
            secrets: Some(BTreeSet::new()),
            ..ServicePatch::default()
        };
        assert_eq!(
            stored.check_patch(&unmask).map_err(|e| e.field),
            Err("secrets".to_owned())
        );
        let placeholder = ServicePatch {
            secrets: Some(BTreeSet::new()),
            env: Some(BTreeMap::from([("TOKEN".to_owned(), REDACTED.to_owned())])),
            ..ServicePatch::default()
        };
        assert!(stored.check_patch(&placeholder).is_err());
        let replaced = ServicePatch {
            secrets: Some(BTreeSet::new()),
            env: Some(BTreeMap::from([(
                "TOKEN".to_owned(),
                "public-now".to_owned(),
            )])),
            ..ServicePatch::default()
        };
        assert!(stored.check_patch(&replaced).is_ok());
        let removed = ServicePatch {
            secrets: Some(BTreeSet::new()),
            env: Some(BTreeMap::new()),
            ..ServicePatch::default()
        };
        assert!(
            stored.check_patch(&removed).is_ok(),
            "removing the variable reveals nothing"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let result: Result<ServiceSpec, _> = serde_json::from_value(serde_json::json!({
            "name": "web", "source": {"git": "https://h/r"}, "replica": 2
        }));
        assert!(result.is_err());
    }
}
